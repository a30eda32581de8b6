"""Hostile input, table-driven, over every command (issue 22).

Every case runs one gemma-edge command on bad or adversarial input and holds it to one
contract:
- the exit code is the expected one (2 for every input error; 0 where the input is fine);
- stderr's `gemma-edge: error:` line is one line (the last line of stderr) and holds the
  expected words; file names are matched as whole names (model.onnx is not model.onnx.data);
- no "Traceback" anywhere in stderr;
- nothing left behind: a refused command changes nothing under the case's directory (no
  `.partial` or `.old` dirs, no half-written or empty output dir, no report in the input).

Classes (the first part of every test id):
1. tamper: every file kind of exports, quantized artifacts and packages, flipped /
   truncated / deleted, plus an unlisted file, against every command that uses it.
2. manifest: path escapes, links, entries removed, manifests that are not manifests.
3. source: checkpoint dirs with pickles, broken configs, missing tokenizers, bad names.
4. args: ranges, encodings, output paths that are files or the input, text and gates files.
5. spec: build specs with wrong types, unknown keys, bad sources, for `build` and `build --plan`.
6. interrupt: SIGINT and kill -9 at a seeded random point of tiny export / quantize /
   package runs, then the same command again.

Inputs are copied into each case's tmp_path (as `in/`), so cases stay independent; the
artifacts themselves are made once per module. The interrupt cases run in subprocesses on
a background thread from the start of the module (they take ~2 minutes of wall time on
their own); their tests come last and wait for their results.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gemma_edge.cli import main

REPO = Path(__file__).resolve().parents[1]
FAMILY = "gemma3_text"
TINY = f"tiny:{FAMILY}"
CHECK_ARGS = ("--against", TINY, "--no-latency", "--max-tokens", "48", "--greedy-tokens", "4",
              "--text", "builtin:gemma_edge_field_notes")
PACKAGE_CHECK_ARGS = ("--against", TINY, "--no-latency", "--greedy-tokens", "4")  # no --text

# the artifacts every case starts from, by key: what each holds (every file kind) and
# which commands use it
ONNX_FILES = ("model.onnx", "model.onnx.data", "tokenizer.json", "tokenizer_config.json",
              "chat_template.jinja")
TFLITE_FILES = ("model.tflite", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
ARTIFACTS = {
    "onnx": {"files": ONNX_FILES, "kind": "onnx-bundle", "commands": ("quantize", "check", "package")},
    "tflite": {"files": TFLITE_FILES, "kind": "litertlm", "commands": ("quantize", "check", "package")},
    "onnx-int8": {"files": ONNX_FILES, "kind": "onnx-bundle", "commands": ("check", "package")},
    "tflite-int8": {"files": TFLITE_FILES, "kind": "litertlm", "commands": ("check", "package")},
    "bundle": {"files": ("model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json",
                         "tokenizer_config.json", "chat_template.jinja"),
               "commands": ("run", "bench", "check")},
    "litertlm": {"files": ("model.litertlm", "tokenizer.json", "tokenizer_config.json",
                           "chat_template.jinja"),
                 "commands": ("run", "bench", "check")},
}
PACKAGE_OF = {"bundle": "onnx-int8", "litertlm": "tflite-int8"}


# --------------------------------------------------------------------------------------
# fixtures: the artifacts (once per module) and each case's context
# --------------------------------------------------------------------------------------

ANY_STAGE = ("export", "quantize", "package")  # whatever a command made must verify


@pytest.fixture(scope="module")
def hostile_cache(tmp_path_factory):
    """A user cache of this module's own (hash cache, LiteRT-LM weight cache), outside
    every case's directory, so it never counts as a leftover."""
    cache = tmp_path_factory.mktemp("hostile-cache")
    old = os.environ.get("GEMMA_EDGE_CACHE")
    os.environ["GEMMA_EDGE_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("GEMMA_EDGE_CACHE", None)
    else:
        os.environ["GEMMA_EDGE_CACHE"] = old


def _main(argv) -> int:
    try:
        return main([os.fspath(a) for a in argv])
    except SystemExit as exc:  # argparse's own exits
        return exc.code


@pytest.fixture(scope="module")
def arts(tmp_path_factory, tiny_export, hostile_cache, background):
    """{key: dir}: tiny ONNX and TFLite exports, int8 of each, every one checked, and a
    package of each kind made from the checked int8 artifacts (so packages carry a check)."""
    base = tmp_path_factory.mktemp("hostile-arts")
    paths = {}
    for fmt in ("onnx", "tflite"):
        src, _ = tiny_export(fmt, FAMILY)
        shutil.copytree(src, base / fmt)
        paths[fmt] = base / fmt
        assert _main(["quantize", base / fmt, "--recipe", "int8", "--out", base / f"{fmt}-int8",
                      "-q"]) == 0
        paths[f"{fmt}-int8"] = base / f"{fmt}-int8"
    for key in ("onnx", "tflite", "onnx-int8", "tflite-int8"):
        assert _main(["check", paths[key], *CHECK_ARGS, "-q"]) == 0, key
    for pkg, art in PACKAGE_OF.items():
        out = base / f"{art}.{ARTIFACTS[art]['kind']}"
        assert _main(["package", paths[art], "--as", ARTIFACTS[art]["kind"], "--out", out, "-q"]) == 0
        paths[pkg] = out
    background.arts_ready(paths)
    return paths


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny):
    """A tiny Hugging Face checkpoint dir (safetensors), saved with save_pretrained."""
    ref = tiny(FAMILY)
    out = tmp_path_factory.mktemp("hostile-ckpt") / "tiny-ckpt"
    ref.model.save_pretrained(out, safe_serialization=True)
    ref.tokenizer.save_pretrained(out)
    return out


class Ctx:
    """One case's directory: inputs are copied into it, outputs go under it."""

    def __init__(self, tmp: Path, arts: dict[str, Path], ckpt: Path):
        self.tmp, self._arts, self._ckpt = tmp, arts, ckpt

    def art(self, key: str, name: str = "in") -> Path:
        """A private copy of the fixture artifact `key`, as tmp/<name>."""
        dest = self.tmp / name
        if not dest.exists():
            shutil.copytree(self._arts[key], dest, symlinks=True)
        return dest

    def ckpt(self, name: str = "ckpt") -> Path:
        dest = self.tmp / name
        if not dest.exists():
            shutil.copytree(self._ckpt, dest)
        return dest

    def write(self, name: str, data: bytes | str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            data = data.encode()
        path.write_bytes(data)
        return path

    def __truediv__(self, name: str) -> Path:
        return self.tmp / name


@pytest.fixture
def ctx(tmp_path, arts, ckpt):
    return Ctx(tmp_path, arts, ckpt)


# --------------------------------------------------------------------------------------
# the contract
# --------------------------------------------------------------------------------------

def snapshot(root: Path) -> dict[str, Any]:
    """Every entry under root: files by (size, mtime), links by target, dirs by name."""
    seen: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                seen[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                seen[rel] = ("dir",)
            else:
                st = path.stat()
                seen[rel] = ("file", st.st_size, st.st_mtime_ns)
    return seen


def first_line(err: str) -> str:
    """What to show for a run: its error line, a traceback's last line, or stderr's first line."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("gemma-edge: error:")]
    if errors:
        return errors[0]
    if "Traceback" in err:
        exc = [ln for ln in lines if not ln.startswith((" ", "gemma-edge: internal error"))
               and not ln.startswith("Traceback")]
        return "Traceback: " + (exc[-1] if exc else "?")
    return lines[0] if lines else "(no stderr)"


def named(name: str) -> re.Pattern:
    """A file name as a whole name: model.onnx does not match model.onnx.data."""
    return re.compile(rf"(?<![\w.-]){re.escape(name)}(?![\w-]|\.\w)")


Words = list  # each item: str (case-insensitive), compiled pattern, or tuple (any of them)


@dataclass
class Outcome:
    argv: list
    code: int | None
    out: str
    err: str
    tmp: Path | None = None
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)

    def summary(self) -> str:
        return f"exit={self.code}; stderr: {first_line(self.err)}"

    def check(self, expect: int | set[int] = 2, words: Words = (), *,
              unchanged: bool = True, allow: Callable[[str], bool] | None = None) -> None:
        expect = {expect} if isinstance(expect, int) else set(expect)
        _log(self)
        problems = []
        if "Traceback" in self.err:
            problems.append("a traceback on stderr")
        if self.code not in expect:
            problems.append(f"exit {self.code}, expected {sorted(expect)}")
        if self.code == 2 or (self.code not in expect and 2 in expect):
            problems += self._error_line(words)
        problems += self._leftovers(unchanged, allow)
        assert not problems, f"{self.summary()}  [{'; '.join(problems)}]"

    def _error_line(self, words: Words) -> list[str]:
        lines = [ln for ln in self.err.splitlines() if ln.strip()]
        errors = [i for i, ln in enumerate(lines) if ln.startswith("gemma-edge: error:")]
        if len(errors) != 1:
            return [f"{len(errors)} 'gemma-edge: error:' lines"]
        if errors[0] != len(lines) - 1:
            return ["the error message runs over more than one line"]
        line = lines[errors[0]]
        if self.tmp is not None:  # words must come from the message, not from a path
            line = line.replace(str(self.tmp), "<tmp>")
        missing = [w for w in words if not _has(line, w)]
        return [f"the error line lacks {', '.join(_show(w) for w in missing)}"] if missing else []

    def _leftovers(self, unchanged: bool, allow) -> list[str]:
        if self.tmp is None:
            return []
        problems = []
        added = sorted(set(self.after) - set(self.before))
        removed = sorted(set(self.before) - set(self.after))
        changed = sorted(k for k in set(self.before) & set(self.after)
                         if self.before[k] != self.after[k] and self.before[k][0] != "dir")
        partials = [k for k in added if k.endswith(".partial") or ".old." in k
                    or Path(k).name.startswith(".") and self.after[k][0] == "dir"]
        if partials:
            problems.append(f"left behind {partials[:3]}")
        empty = [k for k in added if self.after[k][0] == "dir"
                 and not any(o.startswith(k + "/") for o in self.after)]
        if empty:
            problems.append(f"left empty dir(s) {empty[:3]}")
        if unchanged:
            touched = [k for k in added + removed + changed if not (allow and allow(k))
                       and k not in partials and k not in empty]
            if touched:
                problems.append(f"changed files under the case dir: {touched[:4]}")
        return problems


def _log(outcome: Outcome) -> None:
    """HOSTILE_LOG=FILE: one JSON line per case (its id, exit code, first stderr line)."""
    if path := os.environ.get("HOSTILE_LOG"):
        case = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::")[-1].split(" ")[0]
        with open(path, "a") as fh:
            fh.write(json.dumps({"case": case, "code": outcome.code,
                                 "line": first_line(outcome.err)}) + "\n")


def _has(line: str, word) -> bool:
    if isinstance(word, tuple):
        return any(_has(line, w) for w in word)
    if isinstance(word, re.Pattern):
        return bool(word.search(line))
    return word.lower() in line.lower()


def _show(word) -> str:
    if isinstance(word, tuple):
        return " or ".join(_show(w) for w in word)
    return repr(word.pattern if isinstance(word, re.Pattern) else word)


def invoke(ctx: Ctx, argv: list, capsys) -> Outcome:
    """The command in this process (fast): main() returns the exit code."""
    before = snapshot(ctx.tmp)
    capsys.readouterr()
    code = _main(argv)
    cap = capsys.readouterr()
    return Outcome(argv, code, cap.out, cap.err, ctx.tmp, before, snapshot(ctx.tmp))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.pop("PYTHONIOENCODING", None)  # the interpreter's own defaults, as a user's shell has them
    return env


def invoke_process(ctx: Ctx, argv: list, timeout: float = 300) -> Outcome:
    """The command as a real process; argv items may be bytes (non-UTF-8 arguments)."""
    before = snapshot(ctx.tmp)
    cmd = [sys.executable, "-m", "gemma_edge", *[a if isinstance(a, bytes) else os.fspath(a)
                                                 for a in argv]]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, cwd=REPO, env=_env())
    err = proc.stderr.decode("utf-8", "replace")
    return Outcome(argv, proc.returncode, proc.stdout.decode("utf-8", "replace"), err, ctx.tmp,
                   before, snapshot(ctx.tmp))


# --------------------------------------------------------------------------------------
# 1. tampering
# --------------------------------------------------------------------------------------

def command_argv(cmd: str, ctx: Ctx, art: Path, key: str) -> list:
    if cmd == "quantize":
        return ["quantize", art, "--recipe", "int8", "--out", ctx / "out", "-q"]
    if cmd == "check":
        return ["check", art, *(PACKAGE_CHECK_ARGS if key in PACKAGE_OF else CHECK_ARGS), "-q"]
    if cmd == "package":
        return ["package", art, "--as", ARTIFACTS[key]["kind"], "--out", ctx / "out", "-q"]
    if cmd == "run":
        return ["run", art, "--prompt", "x", "--max-new-tokens", "2", "-q"]
    if cmd == "bench":
        return ["bench", art, "--decode-tokens", "2", "--prefill-tokens", "8", "-q"]
    if cmd == "report":
        return ["report", ctx.tmp, "-q"]
    raise AssertionError(cmd)


def mutate(directory: Path, how: str, name: str) -> None:
    file = directory / name
    if how == "flip":
        data = bytearray(file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        file.write_bytes(bytes(data))
    elif how == "truncate":
        data = file.read_bytes()
        file.write_bytes(data[: len(data) // 2])
    elif how == "delete":
        file.unlink()
    elif how == "unlisted":
        file.write_bytes(b"not in the manifest\n")
    else:
        raise AssertionError(how)


TAMPER = [pytest.param(key, cmd, how, name, id=f"tamper-{key}-{cmd}-{how}-{name}")
          for key, spec in ARTIFACTS.items()
          for cmd in spec["commands"]
          for name, hows in [*((n, ("flip", "truncate", "delete")) for n in spec["files"]),
                             ("extra.bin", ("unlisted",))]
          for how in hows]


@pytest.mark.parametrize("key", ARTIFACTS, ids=lambda k: f"tamper-kinds-{k}")
def test_every_file_kind_is_tampered(arts, key):
    """The tables above name every file the artifacts list: a new kind of file needs its cases."""
    listed = set(json.loads((arts[key] / "manifest.json").read_text())["files"])
    assert listed == set(ARTIFACTS[key]["files"]), f"{key} lists {sorted(listed)}"


@pytest.mark.parametrize("key,cmd,how,name", TAMPER)
def test_tampered(ctx, capsys, key, cmd, how, name):
    art = ctx.art(key)
    mutate(art, how, name)
    invoke(ctx, command_argv(cmd, ctx, art, key), capsys).check(2, [named(name)])


CONTROLS = [pytest.param(key, cmd, id=f"tamper-control-{key}-{cmd}")
            for key in PACKAGE_OF for cmd in ARTIFACTS[key]["commands"]]


@pytest.mark.parametrize("key,cmd", CONTROLS)
def test_untampered_control(ctx, capsys, key, cmd):
    """run, bench and check on an untouched copy of each package succeed: the refusals above are the
    tampering's. (quantize, check and package on untouched artifacts are the `arts` fixture.)"""
    art = ctx.art(key)
    made = "check" if cmd == "check" else None  # a check writes its report to PACKAGE/check
    invoke(ctx, command_argv(cmd, ctx, art, key), capsys).check(
        0, allow=lambda p: made is not None and p.split("/")[1] == made)


CHECKED = ("onnx", "tflite", "onnx-int8", "tflite-int8")


def _edit_report(art: Path, edit: Callable[[dict], Any]) -> None:
    report = art / "check" / "report.json"
    data = json.loads(report.read_text())
    report.write_text(json.dumps(edit(data)))


REPORT_EDITS = {
    "other-files": lambda d: {**d, "artifact_sha256": "0" * 64},
    "no-hash": lambda d: {k: v for k, v in d.items() if k != "artifact_sha256"},
}


@pytest.mark.parametrize("key", CHECKED)
@pytest.mark.parametrize("edit", REPORT_EDITS)
def test_package_refuses_a_check_of_other_files(ctx, capsys, key, edit):
    """tamper: a package must never carry a check of other weights than it holds."""
    art = ctx.art(key)
    _edit_report(art, REPORT_EDITS[edit])
    invoke(ctx, command_argv("package", ctx, art, key), capsys).check(2, [("report.json", "check")])


@pytest.mark.parametrize("key", ("onnx-int8", "tflite-int8"))
@pytest.mark.parametrize("junk", [b"{not json", b"\xff\xfe\x00", b"[1, 2]"], ids=["not-json", "not-utf8", "list"])
def test_package_refuses_an_unreadable_check_report(ctx, capsys, key, junk):
    art = ctx.art(key)
    (art / "check" / "report.json").write_bytes(junk)
    invoke(ctx, command_argv("package", ctx, art, key), capsys).check(2, [named("report.json")])


@pytest.mark.parametrize("key", CHECKED)
def test_report_refuses_a_checked_artifact_that_was_tampered(ctx, capsys, key):
    """tamper: a build report must not show PASS for weights that are no longer the checked ones."""
    art = ctx.art(key)
    model = ARTIFACTS[key]["files"][0]
    mutate(art, "flip", model)
    invoke(ctx, command_argv("report", ctx, art, key), capsys).check(
        2, [named(model)], allow=lambda k: k in ("report.json", "report.html"))


# --------------------------------------------------------------------------------------
# 2. manifest attacks
# --------------------------------------------------------------------------------------

def _sha(path: Path) -> dict:
    import hashlib

    data = path.read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _manifest(art: Path) -> dict:
    return json.loads((art / "manifest.json").read_text())


def _save(art: Path, manifest: Any) -> None:
    (art / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _model_of(art: Path) -> str:
    return _manifest(art)["model_file"]


def attack_entry(art: Path, name: str, target: Path) -> None:
    """List `name` (an escape) with the true hash of what it reaches: a naive verifier passes."""
    m = _manifest(art)
    m["files"][name] = _sha(target)
    _save(art, m)


def _secret(art: Path) -> Path:
    secret = art.parent / "secret.txt"
    secret.write_text("outside the artifact\n")
    return secret


def attack_outside_file(art: Path) -> Words:
    attack_entry(art, "../secret.txt", _secret(art))
    return ["../secret.txt"]


def attack_absolute(art: Path) -> Words:
    secret = _secret(art)
    attack_entry(art, str(secret), secret)
    return [named("secret.txt")]


def attack_etc_passwd(art: Path) -> Words:
    attack_entry(art, "../../etc/passwd", Path("/etc/passwd"))
    return ["../../etc/passwd"]


def attack_abs_passwd(art: Path) -> Words:
    attack_entry(art, "/etc/passwd", Path("/etc/passwd"))
    return ["/etc/passwd"]


def attack_symlink_out(name_of: Callable[[Path], str]):
    def attack(art: Path) -> Words:
        name = name_of(art)
        outside = art.parent / f"outside-{name}"
        shutil.move(art / name, outside)  # same bytes, same hash: only the link is wrong
        (art / name).symlink_to(outside)
        return [named(name)]
    return attack


def attack_unlisted_symlink(art: Path) -> Words:
    (art / "extra.txt").symlink_to("/etc/passwd")
    return [named("extra.txt")]


def attack_remove_entry(name_of: Callable[[Path], str]):
    def attack(art: Path) -> Words:
        name = name_of(art)
        m = _manifest(art)
        del m["files"][name]
        _save(art, m)
        return [named(name)]
    return attack


def attack_dot_entry(art: Path) -> Words:
    m = _manifest(art)
    m["files"]["./tokenizer.json"] = m["files"].pop("tokenizer.json")
    _save(art, m)
    return [named("tokenizer.json")]


def attack_entry_not_dict(art: Path) -> Words:
    m = _manifest(art)
    m["files"]["tokenizer.json"] = "trust me"
    _save(art, m)
    return [named("tokenizer.json")]


def attack_model_file_escape(art: Path) -> Words:
    """model_file names a copy outside the directory (same bytes): nothing may load it."""
    m = _manifest(art)
    outside = art.parent / f"evil-{m['model_file']}"
    shutil.copy2(art / m["model_file"], outside)
    m["model_file"] = f"../{outside.name}"
    _save(art, m)
    return [("model_file", named(outside.name))]


def attack_manifest_bytes(data: bytes):
    def attack(art: Path) -> Words:
        (art / "manifest.json").write_bytes(data)
        return [named("manifest.json")]
    return attack


def attack_manifest_truncated(art: Path) -> Words:
    text = (art / "manifest.json").read_bytes()
    (art / "manifest.json").write_bytes(text[: len(text) // 2])
    return [named("manifest.json")]


def attack_manifest_files_list(art: Path) -> Words:
    m = _manifest(art)
    m["files"] = sorted(m["files"])
    _save(art, m)
    return [named("manifest.json")]


def attack_manifest_missing(art: Path) -> Words:
    (art / "manifest.json").unlink()
    return [named("manifest.json")]


MANIFEST_ATTACKS = {
    "entry-dotdot-outside-file": attack_outside_file,
    "entry-dotdot-etc-passwd": attack_etc_passwd,
    "entry-absolute-outside-file": attack_absolute,
    "entry-absolute-etc-passwd": attack_abs_passwd,
    "symlink-model-out": attack_symlink_out(_model_of),
    "symlink-tokenizer-out": attack_symlink_out(lambda a: "tokenizer.json"),
    "unlisted-symlink-etc-passwd": attack_unlisted_symlink,
    "entry-removed-tokenizer": attack_remove_entry(lambda a: "tokenizer.json"),
    "entry-removed-model": attack_remove_entry(_model_of),
    "entry-dot-slash": attack_dot_entry,
    "entry-not-a-dict": attack_entry_not_dict,
    "model-file-escapes": attack_model_file_escape,
    "manifest-truncated": attack_manifest_truncated,
    "manifest-not-json": attack_manifest_bytes(b"this is not json"),
    "manifest-not-utf8": attack_manifest_bytes(b'{"files": "\xff\xfe"}'),
    "manifest-json-list": attack_manifest_bytes(b'["model.onnx"]'),
    "manifest-empty-object": attack_manifest_bytes(b"{}"),
    "manifest-files-list": attack_manifest_files_list,
    "manifest-missing": attack_manifest_missing,  # words: see test_manifest_attack
}
# every attack on an ONNX export and a .litertlm; the model-file ones on the other two kinds
MANIFEST_TARGETS = {"onnx": ("quantize", "check", "package"), "tflite": ("package",),
                    "litertlm": ("run", "bench"), "bundle": ("run",)}
MANIFEST_CASES = [pytest.param(key, cmd, attack, id=f"manifest-{key}-{cmd}-{attack}")
                  for key, cmds in MANIFEST_TARGETS.items() for cmd in cmds
                  for attack in MANIFEST_ATTACKS
                  if key in ("onnx", "litertlm") or attack in ("model-file-escapes",
                                                               "symlink-model-out",
                                                               "entry-dotdot-outside-file")]


@pytest.mark.parametrize("key,cmd,attack", MANIFEST_CASES)
def test_manifest_attack(ctx, capsys, key, cmd, attack):
    art = ctx.art(key)
    words = MANIFEST_ATTACKS[attack](art)
    if attack == "manifest-missing" and cmd == "run":  # `run DIR` also takes checkpoint dirs
        words = [(named("manifest.json"), "package")]
    invoke(ctx, command_argv(cmd, ctx, art, key), capsys).check(2, words)


# --------------------------------------------------------------------------------------
# 3. sources
# --------------------------------------------------------------------------------------

def src_decoy_pickle(ctx: Ctx) -> str:
    """pytorch_model.bin with a decoy x.safetensors beside it (the real weights are the pickle)."""
    import torch
    from safetensors.torch import load_file, save_file

    d = ctx.ckpt()
    torch.save(load_file(d / "model.safetensors"), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    save_file({"decoy": torch.zeros(2)}, d / "x.safetensors")
    return str(d)


def src_pickle_only(ctx: Ctx) -> str:
    import torch
    from safetensors.torch import load_file

    d = ctx.ckpt()
    torch.save(load_file(d / "model.safetensors"), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    return str(d)


def src_pickle_beside_safetensors(ctx: Ctx) -> str:
    import torch

    d = ctx.ckpt()
    torch.save({"anything": torch.zeros(1)}, d / "pytorch_model.bin")
    return str(d)


def src_config(data: bytes):
    def make(ctx: Ctx) -> str:
        d = ctx.ckpt()
        (d / "config.json").write_bytes(data)
        return str(d)
    return make


def src_config_non_utf8(ctx: Ctx) -> str:
    """A harmless extra field in Latin-1: the keys that matter are intact, the file is not UTF-8."""
    d = ctx.ckpt()
    config = json.loads((d / "config.json").read_text())
    config["_comment"] = "caf\xe9"
    (d / "config.json").write_bytes(json.dumps(config, ensure_ascii=False).encode("latin-1"))
    return str(d)


def src_without(*names: str):
    def make(ctx: Ctx) -> str:
        d = ctx.ckpt()
        for name in names:
            if (d / name).exists():
                (d / name).unlink()
        return str(d)
    return make


def src_truncated_weights(ctx: Ctx) -> str:
    d = ctx.ckpt()
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    return str(d)


def src_fake_gguf(ctx: Ctx) -> str:
    return str(ctx.write("model.gguf", b"NOPE" + b"\0" * 64))


def src_other_file(ctx: Ctx) -> str:
    return str(ctx.write("weights.txt", "hello"))


def src_const(value: str):
    return lambda ctx: value.format(tmp=ctx.tmp)


SOURCES = {
    "decoy-safetensors-beside-pickle": (src_decoy_pickle, [named("pytorch_model.bin")]),
    "pickle-only": (src_pickle_only, [named("pytorch_model.bin")]),
    "pickle-beside-real-safetensors": (src_pickle_beside_safetensors, [named("pytorch_model.bin")]),
    "config-json-list": (src_config(b'[{"model_type": "gemma3_text"}]'), [named("config.json")]),
    "config-non-utf8": (src_config_non_utf8, [named("config.json")]),
    "config-not-json": (src_config(b"{model_type: gemma"), [named("config.json")]),
    "config-missing": (src_without("config.json"), [named("config.json")]),
    "tokenizer-missing": (src_without("tokenizer.json", "tokenizer_config.json",
                                      "special_tokens_map.json", "tokenizer.model"), ["tokenizer"]),
    "weights-truncated": (src_truncated_weights, [named("model.safetensors")]),
    "nonexistent-path": (src_const("{tmp}/no-such-checkpoint"), ["does not exist"]),
    "builtin-nope": (src_const("builtin:nope"), ["nope"]),
    "tiny-nope": (src_const("tiny:nope"), ["nope"]),
    "random-nope": (src_const("random:nope"), ["nope", "random:gemma3-1b"]),
    "fake-gguf": (src_fake_gguf, ["GGUF"]),
    "not-a-model-file": (src_other_file, [named("weights.txt")]),
}


def source_argv(cmd: str, ctx: Ctx, source: str) -> list:
    if cmd == "info":
        return ["info", source, "-q"]
    if cmd == "run":
        return ["run", source, "--prompt", "x", "--max-new-tokens", "2", "-q"]
    if cmd == "export":
        return ["export", source, "--format", "onnx", "--out", ctx / "out", "-q"]
    if cmd == "check":
        return ["check", ctx.art("onnx"), *CHECK_ARGS[2:], "--against", source, "-q"]
    raise AssertionError(cmd)


SOURCE_CASES = [pytest.param(cmd, name, id=f"source-{cmd}-{name}")
                for name in SOURCES for cmd in ("info", "run", "export", "check")]


@pytest.mark.parametrize("cmd,name", SOURCE_CASES)
def test_bad_source(ctx, capsys, cmd, name):
    make, words = SOURCES[name]
    invoke(ctx, source_argv(cmd, ctx, make(ctx)), capsys).check(2, words)


def test_source_control_checkpoint_dir_loads(ctx, capsys):
    """source: the saved checkpoint itself is fine (the cases above break only one thing)."""
    invoke(ctx, ["info", ctx.ckpt(), "-q"], capsys).check(0)


# --------------------------------------------------------------------------------------
# 4. arguments
# --------------------------------------------------------------------------------------

GATES_OK = {"fp32": {"gates": [{"metric": "top1_agreement", "min": 0.5}]}}


@dataclass
class Arg:
    id: str
    argv: Callable[[Ctx], list]
    expect: int | set[int] = 2
    words: Words = field(default_factory=list)
    after: Callable[[Ctx, Outcome], None] | None = None  # more checks on the outcome


def _verifies(key: str) -> Callable[[Ctx, Outcome], None]:
    def check(ctx: Ctx, outcome: Outcome) -> None:
        from foundation.integrity import verify_artifact

        verify_artifact(ctx / "in", "package" if key in PACKAGE_OF else "artifact", stages=ANY_STAGE)
    return check


def _gates(ctx: Ctx, data: bytes | str) -> Path:
    return ctx.write("gates.json", data)


def _text(ctx: Ctx, data: bytes | str) -> Path:
    return ctx.write("text.txt", data)


def _file_intact(ctx: Ctx, outcome: Outcome) -> None:
    assert (ctx / "afile").read_bytes() == b"a user's file\n", "--out destroyed the user's file"


def _bench_not_silent_zero(ctx: Ctx, outcome: Outcome) -> None:
    if outcome.code == 0:
        result = json.loads(outcome.out)
        assert result.get("decode_tokens", 0) > 0 and result.get("decode_tps", 0) > 0 \
            and result.get("prompt_tokens", 0) > 0, f"bench reported nothing: {result}"


RUN = ("--prompt", "x", "--max-new-tokens", "2", "-q")
EXPORT = ("export", TINY, "--out")
CHECK = lambda ctx, *extra: ["check", ctx.art("onnx"), *CHECK_ARGS, *extra, "-q"]  # noqa: E731

ARGS = [
    # threads, token counts
    Arg("run-tiny-threads-negative", lambda c: ["run", TINY, *RUN, "--threads", "-1"], words=["--threads"]),
    Arg("run-tiny-threads-zero", lambda c: ["run", TINY, *RUN, "--threads", "0"], words=["--threads"]),
    Arg("run-package-threads-negative", lambda c: ["run", c.art("litertlm"), *RUN, "--threads", "-4"],
        words=["--threads"]),
    Arg("bench-threads-zero", lambda c: ["bench", c.art("bundle"), "--threads", "0", "-q"], words=["--threads"]),
    Arg("bench-threads-negative", lambda c: ["bench", c.art("litertlm"), "--threads", "-1", "-q"],
        words=["--threads"]),
    Arg("check-threads-negative", lambda c: CHECK(c, "--threads", "-2"), words=["--threads"]),
    Arg("run-tiny-max-new-tokens-zero", lambda c: ["run", TINY, "--prompt", "x", "--max-new-tokens", "0", "-q"],
        words=["--max-new-tokens"]),
    Arg("run-package-max-new-tokens-zero",
        lambda c: ["run", c.art("bundle"), "--prompt", "x", "--max-new-tokens", "0", "-q"],
        words=["--max-new-tokens"]),
    Arg("run-package-max-new-tokens-not-int",
        lambda c: ["run", c.art("bundle"), "--prompt", "x", "--max-new-tokens", "2.5", "-q"],
        words=["--max-new-tokens"]),
    Arg("run-tiny-max-new-tokens-past-context",  # tiny context 512: refuse or stop, never crash
        lambda c: ["run", TINY, "--prompt", "x", "--max-new-tokens", "600", "-q"], {0, 2}, ["context"]),
    Arg("run-bundle-max-new-tokens-past-context",
        lambda c: ["run", c.art("bundle"), "--prompt", "x", "--max-new-tokens", "2000", "-q"], {0, 2},
        ["context"]),
    Arg("run-litertlm-max-new-tokens-past-cache",  # cache_length 96
        lambda c: ["run", c.art("litertlm"), "--prompt", "x", "--max-new-tokens", "500", "-q"], {0, 2},
        [("cache", "context")]),
    Arg("check-max-tokens-zero", lambda c: CHECK(c, "--max-tokens", "0"), words=["--max-tokens"]),
    Arg("check-greedy-tokens-negative", lambda c: CHECK(c, "--greedy-tokens", "-1"), words=["--greedy-tokens"]),
    Arg("bench-prefill-tokens-zero", lambda c: ["bench", c.art("bundle"), "--prefill-tokens", "0", "-q"],
        words=["--prefill-tokens"]),
    Arg("bench-decode-tokens-negative", lambda c: ["bench", c.art("bundle"), "--decode-tokens", "-5", "-q"],
        words=["--decode-tokens"]),
    Arg("bench-small-cache-package-default-arguments",  # 128 + 64 tokens into a 96-token cache
        lambda c: ["bench", c.art("litertlm"), "--json", "-q"], {0, 2}, [("cache", "context", "token")],
        after=_bench_not_silent_zero),
    # export options
    Arg("export-cache-length-negative", lambda c: [*EXPORT, c / "out", "--format", "tflite",
                                                   "--cache-length", "-5", "-q"], words=["--cache-length"]),
    Arg("export-cache-length-zero", lambda c: [*EXPORT, c / "out", "--format", "tflite",
                                               "--cache-length", "0", "-q"], words=["--cache-length"]),
    Arg("export-onnx-cache-length-negative", lambda c: [*EXPORT, c / "out", "--format", "onnx",
                                                        "--cache-length", "-5", "-q"],
        words=["--cache-length"]),
    Arg("export-prefill-lengths-0-x", lambda c: [*EXPORT, c / "out", "--format", "tflite",
                                                 "--prefill-lengths", "0,x", "-q"],
        words=["--prefill-lengths"]),
    Arg("export-prefill-lengths-zero", lambda c: [*EXPORT, c / "out", "--format", "tflite",
                                                  "--prefill-lengths", "0", "-q"],
        words=["--prefill-lengths"]),
    Arg("export-head-block-negative", lambda c: [*EXPORT, c / "out", "--format", "tflite",
                                                 "--head-block", "-1", "-q"], words=["--head-block"]),
    Arg("export-rotate-with-head-block", lambda c: [*EXPORT, c / "out", "--format", "tflite",
                                                    "--rotate", "--head-block", "64", "-q"],
        words=["--rotate", "--head-block"]),
    Arg("export-onnx-rotate-recurrent", lambda c: ["export", "tiny:recurrent_gemma", "--out", c / "out",
                                                   "--format", "onnx", "--rotate", "-q"],
        words=["rotat"]),
    # a package in its engine (check PACKAGE)
    Arg("check-package-with-image", lambda c: ["check", c.art("bundle"), *PACKAGE_CHECK_ARGS, "--image",
                                               c / "photo.png", "-q"], words=["--image", "package"]),
    Arg("check-package-gate-on-unknown-engine-metric",
        lambda c: ["check", c.art("litertlm"), *PACKAGE_CHECK_ARGS, "--gates", _gates(c, json.dumps(
            {"int8": {"gates": [{"metric": "engine_nope", "min": 1}]}})), "-q"],
        words=["engine_nope"]),
    Arg("export-format-unknown", lambda c: [*EXPORT, c / "out", "--format", "onnx,nope", "-q"],
        words=["nope"]),
    Arg("export-format-empty", lambda c: [*EXPORT, c / "out", "--format", ",", "-q"], words=["format"]),
    # quantize options
    Arg("quantize-recipe-unknown", lambda c: ["quantize", c.art("onnx"), "--recipe", "nope",
                                              "--out", c / "out", "-q"], words=["nope"]),
    Arg("quantize-recipe-empty", lambda c: ["quantize", c.art("onnx"), "--recipe", ",",
                                            "--out", c / "out", "-q"], words=["recipe"]),
    Arg("quantize-recipe-for-other-format", lambda c: ["quantize", c.art("onnx"), "--recipe",
                                                       "tflite=int8", "--out", c / "out", "-q"],
        words=["tflite"]),
    Arg("quantize-already-quantized", lambda c: ["quantize", c.art("onnx-int8"), "--recipe", "int8",
                                                 "--out", c / "out", "-q"], words=[("quantize", "float", "fp32")]),
    Arg("quantize-a-package", lambda c: ["quantize", c.art("bundle"), "--recipe", "int8",
                                         "--out", c / "out", "-q"],
        words=[("export", "package", "quantized")]),
    # output paths
    Arg("export-out-is-a-file", lambda c: [*EXPORT, c.write("afile", "a user's file\n"),
                                           "--format", "onnx", "-q"],
        words=[named("afile")], after=_file_intact),
    Arg("export-out-is-a-file-overwrite", lambda c: [*EXPORT, c.write("afile", "a user's file\n"),
                                                     "--format", "onnx", "--overwrite", "-q"],
        words=[named("afile")], after=_file_intact),
    Arg("quantize-out-is-a-file", lambda c: ["quantize", c.art("onnx"), "--recipe", "int8", "--out",
                                             c.write("afile", "a user's file\n"), "-q"],
        words=[named("afile")], after=_file_intact),
    Arg("quantize-out-is-a-file-overwrite",
        lambda c: ["quantize", c.art("onnx"), "--recipe", "int8", "--out",
                   c.write("afile", "a user's file\n"), "--overwrite", "-q"],
        words=[named("afile")], after=_file_intact),
    Arg("package-out-is-a-file", lambda c: ["package", c.art("onnx-int8"), "--as", "onnx-bundle",
                                            "--out", c.write("afile", "a user's file\n"), "-q"],
        words=[named("afile")], after=_file_intact),
    Arg("package-out-is-a-file-overwrite",
        lambda c: ["package", c.art("tflite-int8"), "--as", "litertlm", "--out",
                   c.write("afile", "a user's file\n"), "--overwrite", "-q"],
        words=[named("afile")], after=_file_intact),
    Arg("quantize-out-is-the-input-overwrite",
        lambda c: ["quantize", c.art("onnx"), "--recipe", "int8", "--out", c / "in", "--overwrite", "-q"],
        words=["input"], after=_verifies("onnx")),
    Arg("quantize-out-inside-the-input-overwrite",
        lambda c: ["quantize", c.art("tflite"), "--recipe", "int8", "--out", c / "in" / "q",
                   "--overwrite", "-q"], words=["input"], after=_verifies("tflite")),
    Arg("package-out-is-the-input-overwrite",
        lambda c: ["package", c.art("onnx-int8"), "--as", "onnx-bundle", "--out", c / "in",
                   "--overwrite", "-q"], words=["input"], after=_verifies("onnx-int8")),
    Arg("package-out-is-the-input-overwrite-litertlm",
        lambda c: ["package", c.art("tflite-int8"), "--as", "litertlm", "--out", c / "in",
                   "--overwrite", "-q"], words=["input"], after=_verifies("tflite-int8")),
    Arg("package-out-contains-the-input-overwrite",
        lambda c: ["package", c.art("onnx-int8"), "--as", "onnx-bundle", "--out", c.tmp,
                   "--overwrite", "-q"], words=["input"], after=_verifies("onnx-int8")),
    Arg("package-out-exists", lambda c: ["package", c.art("onnx-int8"), "--as", "onnx-bundle",
                                         "--out", c.art("bundle", "out"), "-q"], words=["exists"]),
    Arg("package-wrong-kind", lambda c: ["package", c.art("onnx"), "--as", "litertlm",
                                         "--out", c / "out", "-q"], words=["tflite"]),
    Arg("package-kind-unknown", lambda c: ["package", c.art("onnx"), "--as", "nope",
                                           "--out", c / "out", "-q"], words=["--as"]),
    Arg("package-a-package", lambda c: ["package", c.art("bundle"), "--as", "onnx-bundle",
                                        "--out", c / "out", "-q"], words=[("package", "export")]),
    Arg("package-a-litertlm-package", lambda c: ["package", c.art("litertlm"), "--as", "litertlm",
                                                 "--out", c / "out", "-q"], words=[("package", "export")]),
    # a package is checked in its engine on the check prompts (tests/test_engine_check.py):
    # held-out text is an artifact's parity, refused rather than ignored
    Arg("check-package-with-text", lambda c: ["check", c.art("bundle"), *CHECK_ARGS, "-q"],
        words=["--text", "package"]),
    # check's text and gates
    Arg("check-text-non-utf8", lambda c: CHECK(c, "--text", _text(c, b"caf\xe9 " * 200)),
        words=[named("text.txt")]),
    Arg("check-text-missing", lambda c: CHECK(c, "--text", c / "text.txt"), words=[named("text.txt")]),
    Arg("check-text-empty", lambda c: CHECK(c, "--text", _text(c, "")), words=[named("text.txt")]),
    Arg("check-text-whitespace", lambda c: CHECK(c, "--text", _text(c, " \n\t\n")),
        words=[named("text.txt")]),
    Arg("check-text-a-directory", lambda c: CHECK(c, "--text", c.tmp), words=["text"]),
    Arg("check-text-builtin-nope", lambda c: CHECK(c, "--text", "builtin:nope"), words=["nope"]),
    Arg("check-text-too-short", lambda c: CHECK(c, "--text", _text(c, "hi")), words=["text"]),
    Arg("check-gates-json-list", lambda c: CHECK(c, "--gates", _gates(c, "[1, 2]")),
        words=[named("gates.json")]),
    Arg("check-gates-not-json", lambda c: CHECK(c, "--gates", _gates(c, "{gates")),
        words=[named("gates.json")]),
    Arg("check-gates-not-utf8", lambda c: CHECK(c, "--gates", _gates(c, b'{"fp32\xff": 1}')),
        words=[named("gates.json")]),
    Arg("check-gates-string-bound", lambda c: CHECK(c, "--gates", _gates(c, json.dumps(
        {"fp32": {"gates": [{"metric": "top1_agreement", "min": "0.5"}]}}))),
        words=[named("gates.json")]),
    Arg("check-gates-both-bounds", lambda c: CHECK(c, "--gates", _gates(c, json.dumps(
        {"fp32": {"gates": [{"metric": "top1_agreement", "min": 0.5, "max": 2}]}}))),
        words=[named("gates.json")]),
    Arg("check-gates-family-not-a-table", lambda c: CHECK(c, "--gates", _gates(c, '{"fp32": 5}')),
        words=[named("gates.json")]),
    Arg("check-gates-missing", lambda c: CHECK(c, "--gates", c / "gates.json"),
        words=[named("gates.json")]),
    Arg("check-gates-unknown-metric", lambda c: CHECK(c, "--gates", _gates(c, json.dumps(
        {"fp32": {"gates": [{"metric": "nope", "max": 1}]}}))), words=["nope"]),
    Arg("check-gates-no-gates-for-the-recipe", lambda c: CHECK(c, "--gates", _gates(c, json.dumps(
        {"int4": GATES_OK["fp32"]}))), words=["fp32"]),
    # wrong kinds of directory
    Arg("run-an-export", lambda c: ["run", c.art("onnx"), *RUN], words=["package"]),
    Arg("bench-an-export", lambda c: ["bench", c.art("tflite-int8"), "-q"], words=["package"]),
    Arg("bench-a-plain-dir", lambda c: ["bench", c.tmp, "-q"], words=["manifest.json"]),
    Arg("check-a-plain-dir", lambda c: ["check", c.tmp, *CHECK_ARGS, "-q"], words=["manifest.json"]),
    Arg("check-nonexistent", lambda c: ["check", c / "nope", *CHECK_ARGS, "-q"], words=["nope"]),
    Arg("package-nonexistent", lambda c: ["package", c / "nope", "--as", "litertlm", "-q"],
        words=["nope"]),
    Arg("quantize-nonexistent", lambda c: ["quantize", c / "nope", "--recipe", "int8", "-q"],
        words=["nope"]),
    Arg("report-nonexistent", lambda c: ["report", c / "nope", "-q"], words=["nope"]),
    Arg("report-no-checks", lambda c: ["report", c.tmp, "-q"], words=["check"]),
    Arg("report-check-report-not-json", lambda c: (c.art("onnx"), c.write("in/check/report.json", "{"),
                                                   ["report", c.tmp, "-q"])[-1],
        words=[named("report.json")]),
    Arg("report-check-report-a-list", lambda c: (c.art("onnx"), c.write("in/check/report.json", "[]"),
                                                 ["report", c.tmp, "-q"])[-1],
        words=[named("report.json")]),
    Arg("run-chat-unknown", lambda c: ["run", TINY, *RUN, "--chat", "maybe"], words=["--chat"]),
    Arg("info-variant-unknown", lambda c: ["info", TINY, "--variant", "xl", "-q"], words=["--variant"]),
    Arg("run-package-empty-prompt", lambda c: ["run", c.art("litertlm"), "--prompt", "",
                                               "--max-new-tokens", "2", "-q"], {0, 2}, ["prompt"]),
]


@pytest.mark.parametrize("case", [pytest.param(a, id=f"args-{a.id}") for a in ARGS])
def test_argument(ctx, capsys, case: Arg):
    outcome = invoke(ctx, case.argv(ctx), capsys)
    outcome.check(case.expect, case.words)
    if case.after:
        case.after(ctx, outcome)


# arguments that only a real process can pass: bytes that are not UTF-8
PROC_ARGS = [
    Arg("run-tiny-prompt-not-utf8", lambda c: ["run", TINY, "--prompt", b"caf\xe9 \xff", "--max-new-tokens",
                                               "2", "-q"], words=["UTF-8"]),
    Arg("run-package-prompt-not-utf8", lambda c: ["run", c.art("litertlm"), "--prompt", b"\xff\xfe",
                                                  "--max-new-tokens", "2", "-q"], words=["UTF-8"]),
    Arg("info-path-not-utf8", lambda c: ["info", os.fsencode(c / "no-such-\udcff")], words=["does not exist"]),
    Arg("check-text-path-not-utf8", lambda c: ["check", c.art("onnx"), *CHECK_ARGS, "--text",
                                               os.fsencode(c / "missing-\udcff.txt"), "-q"],
        words=["does not exist"]),
    Arg("package-out-path-not-utf8",  # a fine input: make it (exit 0) or refuse the name (2)
        lambda c: ["package", c.art("onnx-int8"), "--as", "onnx-bundle", "--out",
                   os.fsencode(str(c / "out-")) + b"\xff", "-q"], {0, 2}, ["UTF-8"]),
]


@pytest.mark.parametrize("case", [pytest.param(a, id=f"args-process-{a.id}") for a in PROC_ARGS])
def test_argument_in_a_process(ctx, case: Arg):
    outcome = invoke_process(ctx, case.argv(ctx))
    outcome.check(case.expect, case.words, unchanged=case.expect == 2,
                  allow=lambda k: k.startswith("out-"))


# --------------------------------------------------------------------------------------
# 5. build specs
# --------------------------------------------------------------------------------------

def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise AssertionError(value)


BASE_SPEC = {"source": TINY, "out": "out", "formats": ["onnx"], "recipes": [], "package": False,
             "check": {"text": "builtin:gemma_edge_field_notes", "max_tokens": 48,
                       "greedy_tokens": 4, "latency": False}}
DROP = object()


def spec_text(**changes: Any) -> str:
    """BASE_SPEC with changes: key=value, key=DROP, or check={...}/export={...} merged in."""
    spec = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE_SPEC.items()}
    for key, value in changes.items():
        if value is DROP:
            spec.pop(key, None)
        elif isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key].update(value)
        else:
            spec[key] = value
    top = [f"{k} = {toml_value(v)}" for k, v in spec.items() if not isinstance(v, dict)]
    tables = [f"[{k}]\n" + "\n".join(f"{kk} = {toml_value(vv)}" for kk, vv in v.items())
              for k, v in spec.items() if isinstance(v, dict)]
    return "\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n"


def _spec_source(make: Callable[[Ctx], str]) -> Callable[[Ctx], str]:
    return lambda c: spec_text(source=make(c))


SPECS = {
    "package-is-a-string": (lambda c: spec_text(package="false"), ["package"]),
    "formats-is-a-string": (lambda c: spec_text(formats="onnx"), ["formats"]),
    "formats-empty": (lambda c: spec_text(formats=[]), ["format"]),
    "formats-unknown": (lambda c: spec_text(formats=["onnx", "nope"]), ["nope"]),
    "check-max-tokens-negative": (lambda c: spec_text(check={"max_tokens": -5}), ["max_tokens"]),
    "check-max-tokens-zero": (lambda c: spec_text(check={"max_tokens": 0}), ["max_tokens"]),
    "check-greedy-tokens-a-string": (lambda c: spec_text(check={"greedy_tokens": "4"}), ["greedy_tokens"]),
    "check-latency-yes": (lambda c: spec_text(check={"latency": "yes"}), ["latency"]),
    "check-text-unknown-builtin": (lambda c: spec_text(check={"text": "builtin:nope"}), ["nope"]),
    "check-text-missing-file": (lambda c: spec_text(check={"text": "missing.txt"}), [named("missing.txt")]),
    "check-unknown-key": (lambda c: spec_text(check={"bogus_option": 1}), ["bogus_option"]),
    "export-unknown-key": (lambda c: spec_text(export={"bogus_export": 1}), ["bogus_export"]),
    "export-head-block-negative": (lambda c: spec_text(export={"tflite_head_block": -1}),
                                   ["tflite_head_block"]),
    "export-rotate-a-string": (lambda c: spec_text(export={"tflite_rotate": "no"}), ["tflite_rotate"]),
    "export-onnx-rotate-a-string": (lambda c: spec_text(export={"onnx_rotate": "no"}), ["onnx_rotate"]),
    "unknown-top-level-key": (lambda c: spec_text(bogus_key=1), ["bogus_key"]),
    "recipes-unknown": (lambda c: spec_text(recipes=["nope"]), ["nope"]),
    "recipes-for-a-format-not-built": (lambda c: spec_text(recipes={"tflite": ["int8"]}), ["tflite"]),
    "out-an-integer": (lambda c: spec_text(out=5), ["out"]),
    "out-is-a-file": (lambda c: (c.write("afile", "a user's file\n"), spec_text(out="afile"))[1],
                      [named("afile")]),
    "source-an-integer": (lambda c: spec_text(source=5), ["source"]),
    "source-missing-key": (lambda c: spec_text(source=DROP), ["source"]),
    "source-nonexistent": (_spec_source(lambda c: str(c / "no-such-checkpoint")), ["does not exist"]),
    "source-tiny-nope": (lambda c: spec_text(source="tiny:nope"), ["nope"]),
    "source-builtin-nope": (lambda c: spec_text(source="builtin:nope"), ["nope"]),
    "source-pickle-checkpoint": (_spec_source(src_decoy_pickle), [named("pytorch_model.bin")]),
    "source-config-json-list": (_spec_source(src_config(b"[]")), [named("config.json")]),
    "gates-missing": (lambda c: spec_text(gates="missing-gates.json"), [named("missing-gates.json")]),
    "gates-a-json-list": (lambda c: (c.write("gates.json", "[]"), spec_text(gates="gates.json"))[1],
                          [named("gates.json")]),
    "gates-not-json": (lambda c: (c.write("gates.json", "{"), spec_text(gates="gates.json"))[1],
                       [named("gates.json")]),
    "not-toml": (lambda c: "source = \n[[[", ["TOML"]),
    "not-utf8": (lambda c: b'source = "tiny:gemma3_text"\nout = "\xff"\n', [named("spec.toml")]),
}
SPEC_CASES = [pytest.param(name, plan, id=f"spec-{'build-plan' if plan else 'build'}-{name}")
              for name in [*SPECS, "spec-file-missing"] for plan in (False, True)]


@pytest.mark.parametrize("name,plan", SPEC_CASES)
def test_build_spec(ctx, capsys, name, plan):
    if name == "spec-file-missing":
        spec, words = ctx / "spec.toml", ["does not exist"]
    else:
        make, words = SPECS[name]
        spec = ctx.write("spec.toml", make(ctx))
    outcome = invoke(ctx, ["build", spec, *(["--plan"] if plan else []), "-q"], capsys)
    # a plan writes nothing; a build refused late may keep whole stages it finished, never
    # partial, empty or half-written ones, and with a bad source not even its output dir
    outcome.check(2, words, unchanged=plan)
    if name.startswith("source-"):
        assert not (ctx / "out").exists(), f"{outcome.summary()}  [the refused build left its output dir]"
    for manifest in (ctx.tmp / "out").rglob("manifest.json") if (ctx.tmp / "out").is_dir() else ():
        from foundation.integrity import verify_artifact

        verify_artifact(manifest.parent, stages=ANY_STAGE)  # whole, or the build left it half-written


def test_build_spec_control(ctx, capsys):
    """spec: the base spec itself is fine (its plan runs; the cases above break one thing)."""
    spec = ctx.write("spec.toml", spec_text())
    invoke(ctx, ["build", spec, "--plan", "-q"], capsys).check(0)


# --------------------------------------------------------------------------------------
# 7. stage: `build SPEC --stage NAME [--store DIR]`, the unit a CI matrix runs per machine
# --------------------------------------------------------------------------------------

def _store_file(c: Ctx) -> list:
    c.write("afile", "a user's file\n")
    return ["--stage", "export onnx", "--store", c / "afile"]


STAGE_CASES = {
    "unknown-name": (lambda c: ["--stage", "nope"], ["nope", "--plan"]),
    "empty-name": (lambda c: ["--stage", ""], ["stage", "--plan"]),
    "store-is-a-file": (_store_file, [named("afile"), "directory"]),
    "input-not-made": (lambda c: ["--stage", "check onnx"], ["export onnx", "--store"]),
    "input-not-in-the-store": (lambda c: ["--stage", "check onnx", "--store", c / "store"],
                               ["export onnx", "store"]),
}


@pytest.mark.parametrize("name", list(STAGE_CASES), ids=[f"stage-{n}" for n in STAGE_CASES])
def test_build_stage(ctx, capsys, name):
    make, words = STAGE_CASES[name]
    spec = ctx.write("spec.toml", spec_text())
    args = make(ctx)
    invoke(ctx, ["build", spec, *args, "-q"], capsys).check(2, words)
    assert not (ctx / "out").exists() and not (ctx / "store").exists()


def test_build_stage_refuses_a_tampered_store_entry(ctx, capsys):
    """stage: an entry another machine put in the store is verified before a stage reads it;
    a flipped byte is refused in one line naming the entry, and nothing runs on it."""
    spec = ctx.write("spec.toml", spec_text())
    store = ctx / "store"
    invoke(ctx, ["build", spec, "--stage", "export onnx", "--store", store, "-q"], capsys).check(
        0, unchanged=False)
    [entry] = [p for p in store.iterdir() if not p.name.startswith(".")]
    shutil.rmtree(ctx / "out")
    mutate(entry / "output", "flip", "model.onnx.data")
    outcome = invoke(ctx, ["build", spec, "--stage", "check onnx", "--store", store, "-q"], capsys)
    outcome.check(2, [entry.name, "does not verify", "delete"], unchanged=False)
    assert not (ctx / "out" / "onnx").exists()


# --------------------------------------------------------------------------------------
# 6. interrupts (subprocesses, on a background thread from the start of the module)
# --------------------------------------------------------------------------------------

RNG = random.Random(22)  # fixed seed: the same "random" points every run


@dataclass
class Interrupt:
    id: str
    sig: int
    argv: Callable[[Path, dict], list]  # (case dir, artifacts) -> argv
    target: Callable[[Path], Path]  # the directory the command writes
    scale: float  # the delay drawn from [0.5, 5] s is scaled to this command's write window
    needs_arts: bool = False
    delay: float = 0.0


INTERRUPTS = [
    Interrupt("export-onnx-sigint", signal.SIGINT,
              lambda d, a: ["export", TINY, "--format", "onnx", "--out", d / "build", "--overwrite", "-q"],
              lambda d: d / "build" / "onnx", 1.0),
    Interrupt("export-onnx-kill9", signal.SIGKILL,
              lambda d, a: ["export", TINY, "--format", "onnx", "--out", d / "build", "--overwrite", "-q"],
              lambda d: d / "build" / "onnx", 1.0),
    Interrupt("quantize-int8-kill9", signal.SIGKILL,
              lambda d, a: ["quantize", _copy(a["onnx"], d / "onnx"), "--recipe", "int8", "--out",
                            d / "onnx-int8", "--overwrite", "-q"],
              lambda d: d / "onnx-int8", 0.5, needs_arts=True),
    Interrupt("quantize-int8-sigint", signal.SIGINT,
              lambda d, a: ["quantize", _copy(a["tflite"], d / "tflite"), "--recipe", "int8", "--out",
                            d / "tflite-int8", "--overwrite", "-q"],
              lambda d: d / "tflite-int8", 0.5, needs_arts=True),
    Interrupt("package-litertlm-kill9", signal.SIGKILL,
              lambda d, a: ["package", _copy(a["tflite-int8"], d / "tflite-int8"), "--as", "litertlm",
                            "--out", d / "pkg.litertlm", "--overwrite", "-q"],
              lambda d: d / "pkg.litertlm", 0.1, needs_arts=True),
]
for _case in INTERRUPTS:
    _case.delay = round(RNG.uniform(0.5, 5.0) * _case.scale, 3)


def _copy(src: Path, dest: Path) -> Path:
    if not dest.exists():
        shutil.copytree(src, dest)
    return dest


def _partials(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.*")) if target.parent.exists() else []


def _empty_dirs(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_dir() and not p.is_symlink() and not any(p.iterdir()))


_DEFAULT_SIGINT_EXEC = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                        "os.execv(sys.argv[1], sys.argv[1:])")


def run_interrupt(case: Interrupt, root: Path, arts: dict | None, env: dict,
                  track: Callable[[subprocess.Popen], None]) -> dict:
    """Start the command, wait until it is writing its target (its .partial dir exists),
    wait the case's delay, signal it; then run the same command again."""
    root.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "gemma_edge", *map(os.fspath, case.argv(root, arts))]
    target = case.target(root)

    def start() -> subprocess.Popen:
        # SIGINT at its default, as a terminal's foreground command has it: a suite started
        # as a background job (`make test &` in a script) inherits SIGINT ignored, which the
        # CLI keeps on purpose (foundation/interrupts.py), and the run would finish (exit 0).
        # A launcher resets it and execs the command in place (same pid; no preexec_fn,
        # which forks a threaded interpreter)
        proc = subprocess.Popen([sys.executable, "-c", _DEFAULT_SIGINT_EXEC, *argv], cwd=REPO,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        track(proc)
        return proc

    delay = case.delay
    for _attempt in range(5):  # a loaded machine can finish before the delay: sooner, again
        proc = start()
        started = time.monotonic()
        writing_at = None
        while proc.poll() is None and time.monotonic() - started < 600:
            if writing_at is None and any(p.name.endswith(".partial") for p in _partials(target)):
                writing_at = time.monotonic()
            if writing_at is not None and time.monotonic() - writing_at >= delay:
                break
            time.sleep(0.01)
        # only while it still writes: a run that already committed its output has finished
        # (signalling it then tests nothing); it counts as finished and the next try comes sooner
        signalled = proc.poll() is None and any(p.name.endswith(".partial") for p in _partials(target))
        signal_at = round(time.monotonic() - (writing_at or started), 2)
        if signalled:
            proc.send_signal(case.sig)
        _out, err = proc.communicate(timeout=300)
        if signalled:
            break
        shutil.rmtree(target, ignore_errors=True)
        delay /= 4
    first = {"code": proc.returncode, "err": err.decode("utf-8", "replace"), "signalled": signalled,
             "signal_at": signal_at, "partials": [p.name for p in _partials(target)],
             "target_exists": target.exists(), "empty_dirs": _empty_dirs(root)}
    rerun = start()
    _out, err = rerun.communicate(timeout=600)
    second = {"code": rerun.returncode, "err": err.decode("utf-8", "replace"),
              "partials": [p.name for p in _partials(target)], "empty_dirs": _empty_dirs(root)}
    return {"first": first, "second": second, "target": target}


class Background:
    """Runs the selected interrupt cases in turn on a thread; their tests wait for them."""

    def __init__(self, root: Path, env: dict, selected: list[Interrupt]):
        self.root, self.env, self.selected = root, env, selected
        self.results: dict[str, Any] = {}
        self.done = {c.id: threading.Event() for c in INTERRUPTS}
        self._arts: dict | None = None
        self._arts_ready = threading.Event()
        self._stopping = False
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._work, daemon=True)
        if selected:
            self._thread.start()

    def arts_ready(self, arts: dict) -> None:
        self._arts = arts
        self._arts_ready.set()

    def _track(self, proc: subprocess.Popen) -> None:
        self._proc = proc
        if self._stopping:
            proc.kill()

    def _work(self) -> None:
        for case in self.selected:
            try:
                if self._stopping:
                    raise RuntimeError("the module ended first")
                if case.needs_arts and not self._arts_ready.wait(timeout=1800):
                    raise RuntimeError("the module's artifacts were never made")
                self.results[case.id] = run_interrupt(case, self.root / case.id, self._arts,
                                                      self.env, self._track)
            except BaseException as exc:  # reported by the case's test
                self.results[case.id] = exc
            finally:
                self.done[case.id].set()

    def stop(self) -> None:
        """At the end of the module: end the command still running (ours), if any."""
        self._stopping = True
        self._arts_ready.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def result(self, case_id: str, timeout: float = 1800) -> dict:
        assert self.done[case_id].wait(timeout), f"{case_id} did not finish"
        result = self.results[case_id]
        if isinstance(result, BaseException):
            raise result
        return result


@pytest.fixture(scope="module")
def background(request, tmp_path_factory):
    """Starts the interrupt cases this session selected, at once: they run beside the rest."""
    wanted = {item.callspec.id for item in request.session.items
              if item.originalname == "test_interrupt_then_rerun"}
    selected = [c for c in INTERRUPTS if f"interrupt-{c.id}" in wanted]
    cache = tmp_path_factory.mktemp("hostile-interrupt-cache")
    env = {**_env(), "GEMMA_EDGE_CACHE": str(cache)}
    runner = Background(tmp_path_factory.mktemp("hostile-interrupts"), env, selected)
    yield runner
    runner.stop()


@pytest.fixture(scope="module", autouse=True)
def _start_background_first(background):
    """The interrupt cases start with the module, beside the fixtures and other cases."""


@pytest.mark.parametrize("case", [pytest.param(c, id=f"interrupt-{c.id}") for c in INTERRUPTS])
def test_interrupt_then_rerun(background, arts, case: Interrupt):
    from foundation.integrity import verify_artifact

    r = background.result(case.id)
    first, second, target = r["first"], r["second"], r["target"]
    if path := os.environ.get("HOSTILE_LOG"):
        with open(path, "a") as fh:
            fh.write(json.dumps({"case": f"interrupt-{case.id}", "delay": case.delay,
                                 "first": {k: v for k, v in first.items() if k != "err"}
                                 | {"line": first_line(first["err"])},
                                 "second": {k: v for k, v in second.items() if k != "err"}
                                 | {"line": first_line(second["err"])}}) + "\n")
    assert first["signalled"], f"finished (exit {first['code']}) before every signal, 5 times"
    what = "package" if case.id.startswith("package") else "artifact"
    problems = []
    if "Traceback" in first["err"]:
        problems.append(f"the interrupted run printed a traceback: {first_line(first['err'])}")
    if case.sig == signal.SIGINT:
        if first["code"] not in (130, -signal.SIGINT):  # a shell shows 130 for both
            problems.append(f"interrupted run exited {first['code']}, expected 130 "
                            f"({first_line(first['err'])})")
        if first["partials"] or first["empty_dirs"]:
            problems.append(f"the interrupted run left {first['partials'] + first['empty_dirs']}")
    if first["target_exists"]:  # committed before the signal arrived: then it must be whole
        try:
            verify_artifact(target, what, stages=ANY_STAGE)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"the interrupted run left a {target.name} that does not verify: {exc}")
    if second["code"] != 0 or "Traceback" in second["err"]:
        problems.append(f"rerun exit={second['code']}; stderr: {first_line(second['err'])}")
    if second["partials"] or second["empty_dirs"]:
        problems.append(f"after the rerun: {second['partials'] + second['empty_dirs']} left")
    if second["code"] == 0:
        try:
            verify_artifact(target, what, stages=ANY_STAGE)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"the rerun's output does not verify: {exc}")
    assert not problems, (f"signal {case.sig} sent {first['signal_at']} s into writing "
                          f"(exit {first['code']}): " + "; ".join(problems))
