"""`edgeq targets`: the target profiles."""

from __future__ import annotations

import json

import click

TARGETS_EXAMPLES = """
\b
Examples:
  edgeq targets
  edgeq targets cortex-m4
  edgeq targets coral --json
"""


@click.command(epilog=TARGETS_EXAMPLES)
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the profile(s) as JSON.")
@click.option("--supported-ops", is_flag=True,
              help="Print the target's supported-ops table with each op's limitations.")
def targets(name: str | None, as_json: bool, supported_ops: bool) -> None:
    """List the target profiles, or show one."""
    from edgeq.targets import list_targets, load_target

    if supported_ops and not name:
        raise click.UsageError("--supported-ops needs a target name, e.g. edgeq targets coral "
                               "--supported-ops")
    if name and supported_ops:
        from edgeq.targets import supported_ops_table

        rows = supported_ops_table(load_target(name))
        if as_json:
            click.echo(json.dumps(rows, indent=2))
        else:
            from edgeq.cli.render import print_supported_ops

            print_supported_ops(name, rows)
        return
    if name:
        profile = load_target(name)
        if as_json:
            click.echo(json.dumps(profile.to_dict(), indent=2))
        else:
            from edgeq.cli.render import print_target

            print_target(profile)
        return
    profiles = list_targets()
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in profiles], indent=2))
        return
    from edgeq.cli.render import print_target_list

    print_target_list(profiles)
