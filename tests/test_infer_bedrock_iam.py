"""The IAM examples in manifests/iam/ parse and hold the statements the README promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from switchpoint.core import manifests

IAM = manifests.manifest_dir() / "iam"
GEOGRAPHIES = ("us.", "eu.", "apac.", "jp.", "global.")


def policy(name: str) -> list[dict]:
    document = json.loads((IAM / name).read_text(encoding="utf-8"))
    assert document["Version"] == "2012-10-17"
    return document["Statement"]


def as_list(value) -> list:
    return [value] if isinstance(value, str) else list(value)


def granting(statements: list[dict], action: str) -> list[dict]:
    return [s for s in statements if s["Effect"] == "Allow" and action in as_list(s["Action"])]


@pytest.mark.parametrize("name", sorted(p.name for p in IAM.glob("*.json")))
def test_every_iam_example_parses_and_has_named_statements(name):
    statements = policy(name)
    sids = [s["Sid"] for s in statements]
    assert statements and len(set(sids)) == len(sids)
    for statement in statements:
        assert not any(a in ("*", "s3:*", "bedrock:*", "iam:*") for a in as_list(statement["Action"]))


def test_the_caller_is_granted_the_bedrock_actions_the_job_calls_and_no_listing():
    import switchpoint.infer_bedrock as package

    source = "\n".join(p.read_text(encoding="utf-8") for p in Path(package.__file__).parent.glob("*.py"))
    statements = policy("infer-bedrock-policy.json")
    granted = {a for s in statements if s["Effect"] == "Allow" for a in as_list(s["Action"]) if a.startswith("bedrock:")}
    # Converse needs bedrock:InvokeModel; Stop is there for a person stopping a job by hand.
    called = {"bedrock:CreateModelInvocationJob": ".create_model_invocation_job",
              "bedrock:GetModelInvocationJob": ".get_model_invocation_job", "bedrock:InvokeModel": ".converse("}
    for action, call in called.items():
        assert action in granted and call in source, action
    assert granted - set(called) == {"bedrock:StopModelInvocationJob"}
    assert ".list_model_invocation_jobs" not in source


@pytest.mark.parametrize("name", ["infer-bedrock-policy.json", "bedrock-batch-role-policy.json"])
def test_claude_inference_profiles_of_every_geography_can_be_invoked(name):
    resources = [r for s in granting(policy(name), "bedrock:InvokeModel") for r in as_list(s["Resource"])]
    for geography in GEOGRAPHIES:
        assert any(f":inference-profile/{geography}anthropic.claude-" in r for r in resources), geography
    assert "arn:aws:bedrock:::foundation-model/anthropic.claude-*" in resources  # global profiles' targets


def test_the_sagemaker_execution_role_example_has_store_ecr_logs_and_a_scoped_pass_role():
    statements = policy("sagemaker-execution-role-policy.json")
    (objects,) = granting(statements, "s3:PutObject")
    assert "s3:GetObject" in as_list(objects["Action"])
    assert objects["Resource"] == "arn:aws:s3:::STORE_BUCKET/STORE_PREFIX/*"
    (listing,) = granting(statements, "s3:ListBucket")
    assert listing["Condition"]["StringLike"]["s3:prefix"] == ["STORE_PREFIX/*"]
    assert granting(statements, "ecr:GetAuthorizationToken")[0]["Resource"] == "*"
    (pull,) = granting(statements, "ecr:BatchGetImage")
    assert "ecr:GetDownloadUrlForLayer" in as_list(pull["Action"]) and ":repository/" in pull["Resource"]
    (logs,) = granting(statements, "logs:PutLogEvents")
    assert {"logs:CreateLogStream", "logs:CreateLogGroup"} <= set(as_list(logs["Action"]))
    assert all("/aws/sagemaker/" in r for r in as_list(logs["Resource"]))
    (pass_role,) = granting(statements, "iam:PassRole")
    assert pass_role["Condition"]["StringEquals"]["iam:PassedToService"] == "bedrock.amazonaws.com"
    assert pass_role["Resource"].endswith(":role/BATCH_ROLE_NAME")
    assert not granting(statements, "s3:DeleteObject")


@pytest.mark.parametrize("name, service", [("bedrock-batch-role-trust.json", "bedrock.amazonaws.com"),
                                           ("sagemaker-execution-role-trust.json", "sagemaker.amazonaws.com")])
def test_trust_policies_admit_one_service_of_this_account(name, service):
    (statement,) = policy(name)
    assert statement["Principal"] == {"Service": service} and statement["Action"] == "sts:AssumeRole"
    assert statement["Condition"]["StringEquals"]["aws:SourceAccount"] == "ACCOUNT_ID"
