"""protocol/constants.py: the constants both ends of the wire share."""


def test_the_wire_and_the_pipeline_know_the_same_precisions() -> None:
    from virnuc.pipeline.spec import PRECISIONS as PIPELINE_PRECISIONS
    from virnuc.protocol.constants import PRECISIONS

    assert PRECISIONS == PIPELINE_PRECISIONS
