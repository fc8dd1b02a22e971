"""The running REST API against its OpenAPI document (schemathesis), and fuzzing.

A real osken-manager serves the API (no switch is needed: with no switch
connected a change is validated and saved). Every documented operation is
called with generated valid and invalid input; every answer must be
documented, match its schema, and never be a 500.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from lbrp_app import config
from topologies.controller import Controller, free_port

pytestmark = pytest.mark.integration

OPENAPI = Path(__file__).resolve().parents[2] / "lbrp_app" / "openapi.json"
SEMANTIC_RULES = ("duplicate backend", "duplicate service", "collides")
"""Reasons for a 400 that a JSON schema cannot state (uniqueness of ip:port within a list,
hash id collisions): the only 400s allowed for schema-valid input."""
schema = schemathesis.openapi.from_path(OPENAPI)
TOKEN = "contract-token"


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    cfg = tmp_path_factory.mktemp("contract") / "lbrp.yaml"
    ctl = Controller(cfg, free_port(), env={"LBRP_REST_TOKEN": TOKEN},
                     log_dir=cfg.parent).start()
    yield ctl
    ctl.stop()
    assert "Traceback" not in ctl.log(), ctl.log()


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms(case: schemathesis.Case, controller: Controller) -> None:
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {TOKEN}"}
    response = case.call(base_url=f"http://127.0.0.1:{controller.rest_port}")
    assert response.status_code != 500
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
    if case.meta is not None and case.meta.generation.mode.is_positive:
        # schema-valid input is accepted, or refused for a rule the schema cannot state
        status = response.status_code
        if status == 400:
            assert any(rule in response.json()["error"] for rule in SEMANTIC_RULES), (
                response.text)
        else:  # schemathesis's own list for valid data
            assert status < 400 or status in (401, 403, 404, 409, 429) or status > 500, (
                status, response.text)
    # whatever was accepted, the saved file always matches the served state
    if controller.config_path.exists():
        saved = [s.to_dict() for s in config.load(controller.config_path).sorted_services()]
        assert controller.request("GET", "/services")[1] == saved


def test_documented_error_codes_happen(controller: Controller) -> None:
    """Each error code of the document is produced by the running API."""
    svc = "/services/13.13.13.13/tcp/80"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    seen = {
        400: controller.request("PUT", "/services/13.13.13/tcp/80", {}, headers=auth)[0],
        401: controller.request("PUT", svc, {})[0],
        404: controller.request("GET", "/services/13.13.13.13/tcp/81")[0],
        405: controller.request("POST", "/services", {}, headers=auth)[0],
        413: controller.request("PUT", svc, raw=b"{" + b" " * (1 << 20) + b"}",
                                headers=auth)[0],
    }
    assert seen == {code: code for code in seen}
    # 503 (switch refusal, save failure) is shown by the integration tests with a switch
