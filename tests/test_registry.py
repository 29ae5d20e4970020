"""The registry's lazy import of its built-in modules, seen from several threads."""

import sys
import textwrap
import threading

from reid_srdl.core.registry import Registry


def test_a_second_thread_waits_for_the_whole_registry(tmp_path, monkeypatch):
    # A module that registers one entry, looks a name up (as method files do, re-entering the
    # registry while it imports), pauses, then registers the second.
    (tmp_path / "reg_holder.py").write_text(
        "from reid_srdl.core.registry import Registry\nREG = Registry('thing', modules=('reg_entries',))\n"
    )
    (tmp_path / "reg_entries.py").write_text(
        textwrap.dedent(
            """
            import time
            from reg_holder import REG
            REG.register("a")(1)
            assert "a" in REG  # a lookup during the import neither deadlocks nor recurses
            time.sleep(0.3)
            REG.register("b")(2)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("reg_holder", "reg_entries"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    from reg_holder import REG

    seen = []
    threads = [threading.Thread(target=lambda: seen.append(REG.list())) for _ in range(2)]
    threads[0].start()
    threads[1].start()
    for t in threads:
        t.join(timeout=10)
    assert seen == [["a", "b"], ["a", "b"]]


def test_a_registry_without_modules_needs_no_import():
    reg = Registry("thing")
    reg.register("x")(1)
    assert reg.list() == ["x"] and reg.get("x") == 1
