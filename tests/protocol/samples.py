"""What the protocol tests share: hypothesis strategies of wire values, and a job status."""

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import virnuc.protocol as p

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

wire_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(),
)
wire_values = st.recursive(
    wire_scalars,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)

STATUS: p.JobStatus = {
    "job_id": "j1",
    "state": p.JobState.RUNNING,
    "records_total": 10,
    "records_done": 4,
    "frames_done": 17,
    "restarts": 1,
}
WORKER: p.WorkerInfo = {
    "id": "w0",
    "pid": 4242,
    "device": "cuda:0",
    "state": p.WorkerState.BUSY,
    "job_id": "j1",
    "unit": 3,
}
