"""A griffe extension for the docs build: gworker's docstrings use reST's
cross-reference roles (``:class:`Task```, ``:meth:`~gworker.Aloop.run```),
which Markdown shows as they are written. This turns each into inline code
(the target's last part where reST would show only that: a leading ``~``),
and reST's double-backtick literals are Markdown's code spans already.
"""
import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|data|mod|exc|obj|const):`(~?)([^`]+)`")


def _code(match):
    tilde, target = match.groups()
    if tilde:
        target = target.rsplit(".", 1)[-1]
    return "``%s``" % target


class RstRoles(griffe.Extension):
    """Rewrites reST roles in every docstring griffe reads."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None and ":" in obj.docstring.value:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
