"""Where a run or a benchmark ran (reid_srdl/core/environment.py): the CPU's file-name part,
the commit of the checkout, and metadata that loads no library it names."""

import os
import subprocess
import sys

import pytest

from reid_srdl.core.environment import code_commit, cpu_slug


@pytest.mark.parametrize(
    "cpu, flags, slug",
    [
        ("AMD EPYC", {"avx2", "avx512f", "avx512_bf16"}, "amd-epyc"),
        ("AMD EPYC", {"avx2", "fma"}, "amd-epyc-avx2"),  # the same name, no AVX-512 (Zen 3 guests)
        ("AMD EPYC 7B13 64-Core Processor", set(), "amd-epyc-7b13"),
        ("Intel(R) Xeon(R) Processor", {"avx512f"}, "intel-xeon"),
        ("Intel(R) Xeon(R) Processor", {"avx512f", "amx_tile", "amx_bf16"}, "intel-xeon-amx"),
        ("Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz", set(), "intel-xeon-platinum-8480"),
        ("Apple M2 (TM)", set(), "apple-m2"),
        ("", set(), "unknown-cpu"),
    ],
)
def test_cpu_slug_names_the_cpu_in_a_file_name(cpu, flags, slug):
    assert cpu_slug(cpu, flags) == slug


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def test_code_commit_is_the_checkout_head_and_says_when_tracked_files_changed(tmp_path):
    repo = tmp_path / "checkout"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "a.py").write_text("x = 1\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    head = _git(repo, "rev-parse", "--short", "HEAD")
    assert code_commit(str(repo / "pkg")) == head
    (repo / "untracked.txt").write_text("not part of the code\n")
    assert code_commit(str(repo / "pkg")) == head
    (repo / "pkg" / "a.py").write_text("x = 2\n")
    assert code_commit(str(repo / "pkg")) == head + "-dirty"
    outside = tmp_path / "plain"
    outside.mkdir()
    assert code_commit(str(outside)) is None


def test_machine_metadata_imports_no_library_it_names():
    # A benchmark of peak memory records its metadata; loading torch for it would add ~300 MB.
    code = (
        "import sys; from reid_srdl.core.environment import machine_metadata; m = machine_metadata(); "
        "assert 'torch' not in sys.modules and 'faiss' not in sys.modules, sorted(sys.modules); "
        "import importlib.metadata as md; assert m['torch'] == md.version('torch'), m"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=os.getcwd())
    assert result.returncode == 0, result.stderr
