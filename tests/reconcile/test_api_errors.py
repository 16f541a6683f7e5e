"""API server refusals read as one sentence naming the object, the field and the reason."""
from __future__ import annotations

import json

from kubernetes.client.exceptions import ApiException

from swiftdiffusion.operator.api_errors import MAX_MESSAGE, describe, shorten


def refusal(body: object, status: int = 422, reason: str = "Unprocessable Entity") -> ApiException:
    error = ApiException(status=status, reason=reason)
    error.body = body if isinstance(body, str | bytes) else json.dumps(body)
    return error


INVALID_DEPLOYMENT = {
    "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422,
    "message": 'Deployment.apps "swd-demo-base" is invalid: [spec.template.spec.containers[0].resources.requests: '
               'Invalid value: "4": must be less than or equal to cpu limit of 2, metadata.labels: Invalid value]',
    "details": {"name": "swd-demo-base", "group": "apps", "kind": "Deployment", "causes": [
        {"reason": "FieldValueInvalid", "field": "spec.template.spec.containers[0].resources.requests",
         "message": 'Invalid value: "4": must be less than or equal to cpu limit of 2'},
        {"reason": "FieldValueInvalid", "field": "metadata.labels", "message": 'Invalid value: "a b": must be a label'},
    ]},
}


def test_status_causes_become_one_sentence_with_object_and_fields() -> None:
    text = describe(refusal(INVALID_DEPLOYMENT))
    assert text == (
        'Deployment swd-demo-base refused (Invalid): spec.template.spec.containers[0].resources.requests: '
        'Invalid value: "4": must be less than or equal to cpu limit of 2; metadata.labels: Invalid value: "a b": '
        "must be a label"
    )
    assert "{" not in text and "causes" not in text


def test_status_without_causes_uses_its_message() -> None:
    body = {"kind": "Status", "reason": "Forbidden", "message": 'configmaps "x" is forbidden: no', "details": {
        "kind": "configmaps", "name": "x"}}
    assert describe(refusal(body, 403, "Forbidden")) == 'configmaps x refused (Forbidden): configmaps "x" is forbidden: no'


def test_a_body_that_is_not_a_status_is_never_quoted() -> None:
    text = describe(refusal("<html><body>bad gateway</body></html>", 502, "Bad Gateway"))
    assert text == "API server answered 502 Bad Gateway"


def test_long_messages_are_cut_at_a_word_boundary() -> None:
    body = {**INVALID_DEPLOYMENT, "details": {**INVALID_DEPLOYMENT["details"], "causes": [
        {"field": f"spec.field{i}", "message": "must be something else entirely"} for i in range(40)]}}
    text = describe(refusal(body))
    assert len(text) <= MAX_MESSAGE and text.endswith("…")
    assert text.startswith("Deployment swd-demo-base refused (Invalid): spec.field0: must be")
    assert shorten("a  b\n c") == "a b c"


def test_other_errors_name_their_type() -> None:
    assert describe(ConnectionResetError("peer reset")) == "ConnectionResetError: peer reset"
