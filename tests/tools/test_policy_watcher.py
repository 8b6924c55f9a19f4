"""The policy watcher against a scripted stack: which edits it applies, in which
order, and what the stack ends up serving. No processes; the watcher's loop runs
until the script runs out."""
from types import SimpleNamespace

import pytest

from sidecar.tools.stack import ReloadSuperseded, watch_policy


class ScriptedStack:
    """A stack whose policy file follows `edits` (one per watcher poll) and whose
    reload() takes the file as it is when called, unless `interrupt` says the file
    changes mid-reload: then some process has already taken the edit, the file
    moves on, and the reload is cut short with `interrupt`'s exception."""

    def __init__(self, serving: str, edits: list[str], interrupt: dict[str, tuple[str, Exception]]):
        self.policy = SimpleNamespace(version=serving)
        self.serving = serving
        self.file = serving
        self.edits = list(edits)
        self.interrupt = dict(interrupt)
        self.reloads: list[str] = []
        self.procs = {"sidecar-0": SimpleNamespace(poll=self._poll)}

    def _poll(self):
        return None if self.edits else 0   # the stack "exits" when the script is done

    def file_version(self) -> str:
        self.file = self.edits.pop(0) if self.edits else self.file
        return self.file

    def reload(self) -> str:
        taking = self.file
        self.reloads.append(taking)
        self.serving = taking
        if taking in self.interrupt:
            self.file, exc = self.interrupt.pop(taking)
            raise exc
        return taking


@pytest.mark.parametrize("cut_short", [ReloadSuperseded("changed again"), RuntimeError("not in time")],
                         ids=["superseded", "not-verified"])
def test_an_edit_undone_while_it_was_being_applied_is_undone_on_the_stack_too(cut_short):
    # A -> B, and back to A while B is half applied. The file is A again, which
    # was applied before B: the watcher must still apply it, or a process stays on B.
    stack = ScriptedStack("A", edits=["B", "A", "A", "A"], interrupt={"B": ("A", cut_short)})
    watch_policy(stack, interval=0, retry_after=0)
    assert stack.reloads == ["B", "A"]
    assert stack.serving == "A"


def test_an_edit_already_applied_is_not_applied_again():
    stack = ScriptedStack("A", edits=["A", "B", "B", "B", "C", "C"], interrupt={})
    watch_policy(stack, interval=0)
    assert stack.reloads == ["B", "C"]
    assert stack.serving == "C"


def test_a_reload_cut_short_by_a_newer_edit_goes_on_to_that_edit():
    stack = ScriptedStack("A", edits=["B", "C", "C"], interrupt={"B": ("C", ReloadSuperseded("changed"))})
    watch_policy(stack, interval=0)
    assert stack.reloads == ["B", "C"]
    assert stack.serving == "C"


def test_a_stopped_stack_ends_the_watcher():
    # stop() clears the processes; the watcher must end, not reload a stack that is gone.
    stack = ScriptedStack("A", edits=["A", "B", "B"], interrupt={})
    stack.procs = {}
    watch_policy(stack, interval=0)
    assert stack.reloads == []
