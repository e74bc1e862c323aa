"""Progress output: a live bar on a terminal, a few plain lines in a file or pipe."""

import io

from sae import progress
from sae.progress import progress_bar


def test_progress_in_a_pipe_is_a_few_plain_lines(capsys, monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)  # a line on every update, the worst case
    for _ in progress_bar(range(300), total=300, desc="work", unit="it", leave=False):
        pass
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and lines and all(line.strip() == line and line for line in lines)
    assert lines[-1].startswith("work: 100%") and "300/300" in lines[-1]
    monkeypatch.setattr(progress, "LOG_EVERY_S", 10.0)
    for _ in progress_bar(range(300), total=300, desc="work", unit="it"):
        pass
    assert len(capsys.readouterr().err.splitlines()) <= 2  # the start and the end, not 300 redraws


def test_progress_on_a_terminal_is_tqdm_itself(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    bar = progress_bar(total=10, desc="work")
    bar.update(10)
    bar.close()
    assert "\r" in terminal.getvalue()


def test_postfix_updates_do_not_add_lines(capsys, monkeypatch):
    """The trainers update the postfix every step with refresh=False: no line of their own."""
    monkeypatch.setattr(progress, "LOG_EVERY_S", 10.0)
    bar = progress_bar(total=500, desc="training")
    for step in range(500):
        bar.update(1)
        bar.set_postfix(loss=f"{step:.3f}", refresh=False)
    bar.close()
    assert len(capsys.readouterr().err.splitlines()) <= 2
