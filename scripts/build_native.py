"""Compile the modules listed in ``mxgate.native.MODULES`` with mypyc, in place.

Run by ``scripts/build-native`` (which both README commands run): does nothing
when the build on disk matches the sources; ``--pure`` removes the compiled
modules so that everything runs as plain Python.

With gcc the build is profile-guided: built once instrumented, trained by
``scripts/pgo_train.py`` (SMTP sessions into the journal, deliveries to a next
hop on loopback, a few seconds), then built again with the counts, so that
gcc lays out and inlines the generated C by the paths mail takes. The same
code, about a tenth less CPU per session and per delivery (BENCHMARKS.md,
session 20). ``MXGATE_PGO=0``, another compiler, or a training run that
fails: a plain build.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mxgate import native  # noqa: E402  (the source tree, not an installed copy)


def remove_extensions() -> None:
    for path in native.extension_paths():
        path.unlink()
    native.STAMP.unlink(missing_ok=True)


@contextlib.contextmanager
def redirected(target: int) -> Iterator[None]:
    """Standard output and error (the file descriptors: compilers run as
    subprocesses) into ``target`` for the duration."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


PROFILES = ROOT / "build" / "native" / "pgo"
# The generated functions call each other through global symbols, which in a
# shared object gcc must otherwise treat as replaceable at load time (no
# inlining across them); nothing interposes on an extension module's own
# symbols. About 5% less CPU per session, 9% per delivery, on top of the
# profile (BENCHMARKS.md, session 20).
GCC_FLAGS = "-fno-semantic-interposition"


def gcc() -> bool:
    """Whether setuptools will compile with gcc."""
    compiler = (os.environ.get("CC") or str(sysconfig.get_config_var("CC") or "")).split()
    return bool(compiler) and "gcc" in Path(compiler[0]).name


def profile_guided() -> bool:
    """gcc, and not switched off."""
    return gcc() and os.environ.get("MXGATE_PGO", "1") != "0"


@contextlib.contextmanager
def compiler_flags(cflags: str, ldflags: str) -> Iterator[None]:
    """Extra flags for the compiler and the linker (setuptools appends the
    CFLAGS and LDFLAGS of the environment to Python's own)."""
    saved = {name: os.environ.get(name) for name in ("CFLAGS", "LDFLAGS")}
    for name, extra in (("CFLAGS", cflags), ("LDFLAGS", ldflags)):
        os.environ[name] = f"{saved[name] or ''} {extra}".strip()
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def train() -> None:
    """The training run, on the instrumented modules of the source tree."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("MXGATE_PURE", None)
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "pgo_train.py")],
        env=env,
        check=True,
        timeout=600,
    )


def build_profile_guided(jobs: int) -> None:
    shutil.rmtree(PROFILES, ignore_errors=True)
    PROFILES.mkdir(parents=True)
    with compiler_flags(
        f"-fprofile-generate -fprofile-update=atomic -fprofile-dir={PROFILES} {GCC_FLAGS}",
        "-fprofile-generate",
    ):
        build(jobs)
    train()
    remove_extensions()
    # -fprofile-correction: counts from the sync thread may be slightly off.
    with compiler_flags(
        "-fprofile-use -fprofile-correction -Wno-missing-profile "
        f"-fprofile-dir={PROFILES} {GCC_FLAGS}",
        "",
    ):
        build(jobs)


def build(jobs: int) -> None:
    # Imported here: --pure and the up-to-date check need neither.
    from mypyc.build import mypycify
    from setuptools import Distribution
    from setuptools.command.build_ext import build_ext

    os.chdir(ROOT)  # mypy reads pyproject.toml's settings from here
    temp = ROOT / "build" / "native"
    # setuptools skips an extension whose last build looks newer than its C
    # source, whatever the flags: every build here starts from nothing.
    shutil.rmtree(temp / "obj", ignore_errors=True)
    for old in (ROOT / "build").glob("lib.*"):
        shutil.rmtree(old, ignore_errors=True)
    groups: list[tuple[list[str], str | None]] = [
        ([str(native.source_path(m).relative_to(ROOT)) for m in modules], name)
        for name, modules in native.GROUPS.items()
    ]
    paths = [path for group, _ in groups for path in group]
    extensions = mypycify(paths, opt_level="3", separate=groups, target_dir=str(temp / "c"))
    dist = Distribution({"ext_modules": extensions, "package_dir": {"": "src"}})
    command = build_ext(dist)
    command.inplace = True
    command.parallel = jobs
    command.build_temp = str(temp / "obj")
    command.ensure_finalized()
    command.run()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pure", action="store_true", help="remove the compiled modules")
    parser.add_argument("--force", action="store_true", help="build even when up to date")
    args = parser.parse_args()
    if args.pure:
        remove_extensions()
        print("mxgate: compiled modules removed; everything runs as plain Python")
        return 0
    digest = native.sources_digest()
    if not args.force and native.stale() is None and native.extension_paths():
        return 0
    print(f"mxgate: compiling {len(native.MODULES)} modules with mypyc (two or three minutes)...")
    started = time.monotonic()
    remove_extensions()
    log = ROOT / "build" / "native" / "build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    jobs = os.cpu_count() or 1
    how = ""
    try:
        # mypyc's notes and the compiler's command lines go to the log; shown
        # only when the build fails.
        with log.open("w") as out, redirected(out.fileno()):
            if profile_guided():
                try:
                    build_profile_guided(jobs)
                    how = ", profile-guided"
                except (Exception, SystemExit) as exc:  # any failure: the plain build
                    print(f"mxgate: profile-guided build failed ({exc!r}): a plain build")
                    remove_extensions()
                    with compiler_flags(GCC_FLAGS, ""):
                        build(jobs)
            elif gcc():
                with compiler_flags(GCC_FLAGS, ""):
                    build(jobs)
            else:
                build(jobs)
    except BaseException as exc:
        remove_extensions()  # never leave half a build to shadow the sources
        sys.stderr.write(log.read_text()[-20000:])
        print(
            f"mxgate: the compiled build failed ({exc!r}); log: {log}\n"
            "mxgate: MXGATE_PURE=1 runs mxgate as plain Python, without compiling",
            file=sys.stderr,
        )
        return 1
    native.STAMP.write_text(digest + "\n")
    print(f"mxgate: compiled in {time.monotonic() - started:.0f} s{how}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
