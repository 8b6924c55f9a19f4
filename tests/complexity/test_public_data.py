"""build-data: pinned commits read with git, labels mapped to tiers, rows from
reserved benchmarks dropped, repositories found in the layouts people keep."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from sidecar.complexity import public_data

FOLLOWBENCH = {"data/content_constraints.json": [], "data/format_constraints.json": [],
               "data/mixed_constraints.json": [], "data/situation_constraints.json": [],
               "data/style_constraints.json": [], "data/example_constraints.json": []}


def git(*args, cwd):
    out = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                         env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                              "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(cwd), "PATH": "/usr/bin:/bin"})
    return out.stdout.strip()


def make_repo(path, files: dict) -> str:
    path.mkdir(parents=True)
    git("init", "-q", cwd=path)
    return commit(path, files)


def commit(path, files: dict) -> str:
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content if isinstance(content, str) else json.dumps(content))
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "data", cwd=path)
    return git("rev-parse", "HEAD", cwd=path)


@pytest.fixture
def repos(tmp_path, monkeypatch):
    """Two sources in the two layouts: a checkout named owner+name, and a bare
    clone under owner+name/repo (the fetch tool's)."""
    follow = dict(FOLLOWBENCH)
    follow["data/format_constraints.json"] = [
        {"example_id": 1, "level": lvl, "source": "oasst", "instruction": f"Write a poem, {lvl} rules"}
        for lvl in range(6)] + [
        {"example_id": 2, "level": 1, "source": "vicuna", "instruction": "a reserved prompt"},
        {"example_id": 3, "level": 2, "source": "BBH_logical", "instruction": "another reserved one"}]
    follow_commit = make_repo(tmp_path / "YJiangcm+FollowBench", follow)
    expert_rows = [
        {"question": "What is the boiling point of ethanol?",
         "metadata": {"question_type": "Directed question that has a single unambiguous answer"}},
        {"question": "Should a small clinic adopt electronic records now?",
         "metadata": {"question_type": "Request for opinion on a topic"}},
        {"question": "Suppose a bridge shows new cracks after a flood; what do you check first?",
         "metadata": {"question_type": "Directed question that has a single unambiguous answer| Question "
                                       "that describes a hypothetical scenario and asks a question based "
                                       "on this scenario"}}]
    work = tmp_path / "work"
    expert_commit = make_repo(work, {"data/r1_data_anon.jsonl":
                                     "".join(json.dumps(r) + "\n" for r in expert_rows)})
    commit(work, {"data/r1_data_anon.jsonl": json.dumps({"question": "later", "metadata": {
        "question_type": "Request for opinion on a topic"}}) + "\n"})  # a later commit: never read
    (tmp_path / "chaitanyamalaviya+ExpertQA").mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(tmp_path / "chaitanyamalaviya+ExpertQA" / "repo")],
                   check=True)
    by_file = {s.file: s for s in public_data.SOURCES}
    monkeypatch.setattr(public_data, "SOURCES", (
        dataclasses.replace(by_file["followbench"], commit=follow_commit),
        dataclasses.replace(by_file["expertqa"], commit=expert_commit)))
    return tmp_path


def test_build_reads_each_source_at_its_pinned_commit_and_maps_labels(repos):
    rows = public_data.build(repos, log=lambda *_: None)
    follow = [r for r in rows if r["file"] == "followbench"]
    assert [(r["label"], r["tier"]) for r in follow] == [
        ("level 0", 2), ("level 1", 2), ("level 2", 3), ("level 3", 3), ("level 4", 4), ("level 5", 4)]
    expert = [r for r in rows if r["file"] == "expertqa"]
    assert [(r["label"], r["tier"]) for r in expert] == [("directed", 2), ("open", 3), ("scenario", 4)]
    assert all(r["kind"] and r["license"] and r["source"] for r in rows)


def test_rows_a_source_borrowed_from_a_reserved_benchmark_are_dropped(repos):
    prompts = {r["prompt"] for r in public_data.build(repos, log=lambda *_: None)}
    assert not {"a reserved prompt", "another reserved one"} & prompts


@pytest.mark.parametrize("name", ["MMLU", "bbh_logical", "Arena-Hard", "mt_bench", "vicuna", "HotpotQA",
                                  "leetcode", "L-Eval", "XSTest", "SVAMP", "ASDiv", "MAWPS",
                                  "OlympiadBench", "AIME", "AMC", "minerva_math", "gaokao_math",
                                  "college_math", "SAT-math", "big-bench", "BIG_bench_hard"])
def test_every_reserved_benchmark_name_is_recognised(name):
    assert public_data.RESERVED.search(name)


@pytest.mark.parametrize("name", ["oasst", "koala", "quora", "sat-en", "lsat-ar", "ROCStories"])
def test_ordinary_sources_are_kept(name):
    assert not public_data.RESERVED.search(name)


def test_a_missing_repository_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="not under"):
        public_data.build(tmp_path, log=lambda *_: None)


def test_every_source_is_pinned_and_licensed():
    for source in public_data.SOURCES:
        assert len(source.commit) == 40 and int(source.commit, 16) >= 0
        assert source.license and source.mapping and source.kind
    assert len({s.kind for s in public_data.SOURCES}) >= 5


def test_build_data_command_writes_jsonl(repos, tmp_path):
    out = tmp_path / "gathered.jsonl"
    code = f"""
import dataclasses, sys
from sidecar import cli
from sidecar.complexity import public_data
by_file = {{s.file: s for s in public_data.SOURCES}}
public_data.SOURCES = tuple(dataclasses.replace(by_file[f], commit=c) for f, c in {dict((s.file, s.commit) for s in public_data.SOURCES)!r}.items())
sys.exit(cli.main(["build-data", "--repos", {str(repos)!r}, "--out", {str(out)!r}]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["file"] for r in rows} == {"followbench", "expertqa"}
    missing = subprocess.run([sys.executable, "-m", "sidecar", "build-data", "--repos", str(tmp_path / "none"),
                              "--out", str(out)], capture_output=True, text=True)
    assert missing.returncode == 2 and "not under" in missing.stderr


def test_exercism_difficulty_bands_become_tiers_and_reserved_or_retired_exercises_are_left_out(tmp_path):
    exercises = [("leap", 1), ("minesweeper", 3), ("forth", 4), ("react", 7), ("zipper", 8),
                 ("sgf-parsing", 10), ("two-sum", 2), ("old", 5)]
    files = {"config.json": {"language": "Rust", "slug": "rust", "exercises": {"practice": [
        {"slug": slug, "difficulty": d, **({"status": "deprecated"} if slug == "old" else {})}
        for slug, d in exercises]}}}
    for slug, _ in exercises:
        source = "LeetCode 1" if slug == "two-sum" else "Wikipedia"
        files[f"exercises/practice/{slug}/.docs/instructions.md"] = f"# Instructions\n\nDo {slug}."
        files[f"exercises/practice/{slug}/.meta/config.json"] = {
            "files": {"solution": ["src/lib.rs", "src/generated.rs"]}, "source": source}
        files[f"exercises/practice/{slug}/src/lib.rs"] = f"pub fn {slug.replace('-', '_')}() {{ todo!() }}"
    commit_id = make_repo(tmp_path / "track", files)
    rows = list(public_data.read_exercism(public_data.Repo(tmp_path / "track" / ".git", commit_id)))
    assert [(ident, label, tier) for ident, _, label, tier in rows] == [
        ("rust/leap", "easy (1)", 2), ("rust/minesweeper", "easy (3)", 2), ("rust/forth", "medium (4)", 3),
        ("rust/react", "medium (7)", 3), ("rust/zipper", "hard (8)", 4), ("rust/sgf-parsing", "hard (10)", 4)]
    prompt = rows[2][1]
    # The instructions, the language, and the starter file that exists (the missing one is skipped).
    assert prompt.startswith("# Instructions\n\nDo forth.") and "Solve this in Rust" in prompt
    assert "```rust\npub fn forth() { todo!() }\n```" in prompt and "generated" not in prompt


def test_all_exercism_tracks_share_one_file_so_they_weigh_as_one_source():
    tracks = [s for s in public_data.SOURCES if s.repo.startswith("exercism/")]
    assert len(tracks) >= 5 and {s.file for s in tracks} == {"exercism"}
    assert len({s.repo for s in tracks}) == len(tracks)


def test_stack_overflow_questions_take_their_rated_level_whatever_the_keys_case(tmp_path):
    # StackEval writes {"type", "level"}; its later StackUnseen sets {"Type", "Level"}, capitalised.
    def lines(*rows):
        return "".join(json.dumps(r) + "\n" for r in rows)
    files = {"data/stack-eval.jsonl": lines(
                 {"questionId": "a", "question": "How do I pad a binary number?\nDetails.\n",
                  "questionMetadata": {"type": "implementation", "level": "beginner", "tag": "rust"}},
                 {"questionId": "b", "question": "Why does my async loop deadlock?",
                  "questionMetadata": {"type": "debugging", "level": "advanced", "tag": "python"}}),
             "data/stack-unseen-1.jsonl": lines(
                 {"questionId": "c", "question": "Build fails after upgrading the JDK",
                  "questionMetadata": {"Type": "Version", "Level": "Intermediate", "Tag": "java"}}),
             "data/stack-unseen-2.jsonl": ""}
    commit_id = make_repo(tmp_path / "stack", files)
    rows = list(public_data.read_stack_questions(public_data.Repo(tmp_path / "stack" / ".git", commit_id)))
    assert [(ident, label, tier) for ident, _, label, tier in rows] == [
        ("stack-eval/a", "beginner", 2), ("stack-eval/b", "advanced", 4),
        ("stack-unseen-1/c", "intermediate", 3)]
    assert rows[0][1] == "How do I pad a binary number?\nDetails."
