"""Bad input by fuzzing the OpenAPI schema: no operation may answer 500, whatever it is sent.

Schemathesis generates valid and invalid requests for every operation of the app's schema.
Chat operations are left out: a generated agent would call a real model (they have their own
validation tests in tests/integration/test_agents_api.py).
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from gathering.api.app import app

schema = schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path_regex=r"/chat")


# The app runs on the test client's own thread, beside hypothesis drawing the next case: when
# a request leaves the database pool or the event listener busy after its answer, their jitter
# (psycopg_pool and gathering.events.listener use the `random` module) can run during a draw,
# which hypothesis reports as "random inside strategies". No strategy of ours uses `random`.
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_operation_answers_500(case):
    case.call_and_validate(checks=[not_a_server_error])
