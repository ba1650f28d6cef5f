"""`orgsync roles template`: CloudFormation templates of the roles orgsync assumes.

The templates come from `domain.templates`, built from the rules `org add` and the member validation
check; this module reads and checks the options, renders YAML and says, in comments at the top, how to
deploy it. An external id is read only to check its format: the template takes it as a `NoEcho`
parameter, and its value is never printed.
"""

from __future__ import annotations

import shlex
import sys
from typing import Annotated, Any

import typer

from domain import templates
from domain.config import DEFAULT_SESSION_SECONDS, check_external_id

from .common import read_secret

roles_app = typer.Typer(no_args_is_help=True, help="The AWS roles orgsync assumes.")
template_app = typer.Typer(
    no_args_is_help=True, help="Print a CloudFormation template (YAML) of orgsync's roles, from the rules it checks."
)
roles_app.add_typer(template_app, name="template")

CallerOpt = Annotated[
    str | None,
    typer.Option(
        metavar="ARN",
        help="IAM role (instance role) or IAM user orgsync calls AssumeRole as; else a CallerArn parameter.",
        show_default=False,
    ),
]
ExternalIdFileOpt = Annotated[
    str | None,
    typer.Option(
        metavar="PATH|-",
        help="File with the external id ('-' = stdin): checked, then asked for as a NoEcho parameter, never printed.",
        show_default=False,
    ),
]
MaxSessionOpt = Annotated[int, typer.Option(metavar="S", help="The role's maximum session, 3600-43200 seconds.")]
MemberRoleOpt = Annotated[
    str,
    typer.Option(metavar="NAME", help="The member role name orgsync is given (--member-role-name), path included."),
]
ManagedPolicyOpt = Annotated[
    list[str] | None,
    typer.Option(
        metavar="ARN",
        help=f"A managed policy of the member role (repeatable); none given: AWS's {templates.DEFAULT_MEMBER_POLICY}.",
        show_default=False,
    ),
]
EXTERNAL_ID_FIELD = "external-id-file"
STACK_NAMES = {"management": "orgsync-management", "members": "orgsync-member-role", "org": "orgsync"}


def _external_id(path: str | None) -> bool:
    """Whether an external id is used; the file must hold a valid one (the check `org add` makes)."""
    if path is None:
        return False
    check_external_id(read_secret(path, EXTERNAL_ID_FIELD), EXTERNAL_ID_FIELD)
    return True


def _parameters(caller_arn: str | None, external_id_file: str | None) -> str:
    """The `--parameters` of an `aws cloudformation` command for this template (the external id from its file)."""
    given = []
    if caller_arn is None:
        given.append("ParameterKey=CallerArn,ParameterValue=<caller ARN>")
    if external_id_file is not None:
        source = "<file with the external id>" if external_id_file == "-" else shlex.quote(external_id_file)
        given.append(f"ParameterKey=ExternalId,ParameterValue=$(cat {source})")
    return f" --parameters {' '.join(given)}" if given else ""


def _create_stack(kind: str, parameters: str) -> str:
    return (
        f"aws cloudformation create-stack --stack-name {STACK_NAMES[kind]} --template-body file://{kind}.yaml"
        f" --capabilities CAPABILITY_NAMED_IAM{parameters}"
    )


def _print(template: dict[str, Any], comments: list[str]) -> None:
    from ..cfn import render

    sys.stdout.write(render(template, comments))


@template_app.command("management")
def template_management(
    caller_arn: CallerOpt = None,
    external_id_file: ExternalIdFileOpt = None,
    max_session_duration: MaxSessionOpt = DEFAULT_SESSION_SECONDS,
) -> None:
    """The management account's role: allowed exactly the Organizations calls orgsync makes."""
    template = templates.management_template(
        caller_arn=caller_arn, external_id=_external_id(external_id_file), max_session_duration=max_session_duration
    )
    _print(
        template,
        [
            "orgsync's role in the management account; create the stack there (its RoleArn output is --org-role-arn):",
            "  " + _create_stack("management", _parameters(caller_arn, external_id_file)),
        ],
    )


@template_app.command("members")
def template_members(
    role_name: MemberRoleOpt,
    caller_arn: CallerOpt = None,
    external_id_file: ExternalIdFileOpt = None,
    max_session_duration: MaxSessionOpt = DEFAULT_SESSION_SECONDS,
    managed_policy_arn: ManagedPolicyOpt = None,
) -> None:
    """The member role, for a service-managed StackSet that deploys it to every account, new ones included."""
    template = templates.members_template(
        role_name=role_name,
        caller_arn=caller_arn,
        external_id=_external_id(external_id_file),
        max_session_duration=max_session_duration,
        managed_policy_arns=managed_policy_arn or (),
    )
    parameters = _parameters(caller_arn, external_id_file)
    name = STACK_NAMES["members"]
    _print(
        template,
        [
            "orgsync's member role; from the management account, deploy it to the organization with a StackSet:",
            f"  aws cloudformation create-stack-set --stack-set-name {name} --template-body file://members.yaml"
            " --permission-model SERVICE_MANAGED --auto-deployment Enabled=true,RetainStacksOnAccountRemoval=false"
            f" --capabilities CAPABILITY_NAMED_IAM{parameters}",
            f"  aws cloudformation create-stack-instances --stack-set-name {name}"
            " --deployment-targets OrganizationalUnitIds=<r-xxxx or ou-…>"
            f" --regions {' '.join(templates.STACKSET_REGIONS)}",
            "and in the management account itself, which a StackSet never deploys to:",
            "  " + _create_stack("members", parameters),
        ],
    )


@template_app.command("org")
def template_org(
    role_name: MemberRoleOpt,
    deployment_target: Annotated[
        list[str],
        typer.Option(
            metavar="r-xxxx|ou-…",
            help="The root or an organizational unit the member role goes to (repeatable).",
            show_default=False,
        ),
    ],
    caller_arn: CallerOpt = None,
    external_id_file: ExternalIdFileOpt = None,
    max_session_duration: MaxSessionOpt = DEFAULT_SESSION_SECONDS,
    managed_policy_arn: ManagedPolicyOpt = None,
) -> None:
    """One stack for the whole organization: the management role, and the member role in every account."""
    template = templates.org_template(
        role_name=role_name,
        deployment_targets=deployment_target,
        caller_arn=caller_arn,
        external_id=_external_id(external_id_file),
        max_session_duration=max_session_duration,
        managed_policy_arns=managed_policy_arn or (),
    )
    external = " (the same external id file for both roles)" if external_id_file is not None else ""
    member = shlex.quote(role_name)
    _print(
        template,
        [
            "orgsync's roles for the whole organization; create the stack in the management account:",
            "  " + _create_stack("org", _parameters(caller_arn, external_id_file)),
            f"then orgsync org add --org-role-arn <the RoleArn output> --member-role-name {member}{external}",
        ],
    )
