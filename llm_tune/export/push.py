"""`llm_tune push`: an export folder to the Hugging Face Hub, the repo created if missing, one commit.

huggingface_hub's shared HTTP client waits forever by default; every call here runs under --timeout.
The token is whatever huggingface_hub finds (HF_TOKEN, then the saved login): it is handed to the client
and never printed or written. Every failure is one `error:` line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm_tune import __version__
from llm_tune.console import say
from llm_tune.errors import UserError
from llm_tune.run_folder import RunFolder, read_json

EXIT_PUSH_FAILED = 1


class PushFailed(UserError):
    """The Hub (or the network) refused or did not answer; the user's input was fine."""

    exit_code = EXIT_PUSH_FAILED


def export_folder_for(path: Path, merged: bool) -> Path:
    """The folder to upload: PATH itself when it is an export, else the run's export (made if missing)."""
    from llm_tune.export.exporter import export_run
    from llm_tune.export.job import export_options
    from llm_tune.run_folder import MANIFEST

    if not path.is_dir():
        raise UserError(f"{path}: folder not found; give a run folder or an export folder")
    if (path / MANIFEST).is_file():
        layout = read_json(path / MANIFEST).get("layout")
        if merged and layout != "merged":
            raise UserError(
                f"{path}: holds a {layout!r} export, not a merged one; drop --merged or export with --merge"
            )
        return path
    run = RunFolder(path)
    if not run.is_run():
        raise UserError(f"{path}: neither a run folder ({run.recipe_file.name}) nor an export ({MANIFEST})")
    recipe = run.read_recipe()
    merged = merged or not recipe.adapter
    folder = run.export(merged)
    if not (folder / MANIFEST).is_file():
        say(f"{folder} does not exist yet: exporting first")
        # A run folder pushes its transformers export; a GGUF export is pushed by its own folder.
        export_run(path, export_options(recipe, merge=merged, out=None, format="safetensors"), recipe)
    return folder


def set_timeout(seconds: float) -> None:
    """Make huggingface_hub's shared client through its own factory hook (set_client_factory), with a finite
    timeout for connecting, reading, writing and pooling; the hub's default client keeps its request hook (offline
    mode, request ids)."""
    import httpx2
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils._http import default_client_factory  # the hub's own default, the factory we extend

    def client() -> httpx2.Client:
        made = default_client_factory()
        made.timeout = httpx2.Timeout(seconds)
        return made

    set_client_factory(client)


def push_command(
    path: Path, repo_id: str, *, private: bool, merged: bool, revision: str | None, timeout: float
) -> None:
    import sys

    from llm_tune.console import fail

    folder = export_folder_for(Path(path), merged)
    try:
        info = push_folder(folder, repo_id, private=private, revision=revision, timeout=timeout)
    except PushFailed as exc:
        fail(exc.problems)
        sys.exit(EXIT_PUSH_FAILED)
    say(f"pushed {folder} to {info['url']} (revision {info['revision']}, commit {info['commit']})")


def push_folder(folder: Path, repo_id: str, *, private: bool, revision: str | None, timeout: float) -> dict[str, Any]:
    """create_repo (exist_ok), the branch if asked, then upload_folder as one commit."""
    from huggingface_hub import HfApi, constants

    if constants.is_offline_mode():
        raise UserError("HF_HUB_OFFLINE=1 is set: unset it to push to the Hub")
    set_timeout(timeout)
    # Large files go through the LFS protocol on that same client: the xet uploader (hf_xet, Rust) has its
    # own network stack, which --timeout cannot reach, and a push must never hang.
    constants.HF_HUB_DISABLE_XET = True
    api = HfApi()  # token: HF_TOKEN or the saved login, resolved inside huggingface_hub
    endpoint = api.endpoint
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            revision=revision,
            commit_message=f"Upload {folder.name} export (llm_tune {__version__})",
        )
    except Exception as exc:  # every network / Hub failure becomes one line
        raise PushFailed(describe_failure(exc, endpoint, repo_id, timeout)) from None
    return {"url": str(url), "revision": revision or "main", "commit": getattr(commit, "oid", None)}


def describe_failure(exc: BaseException, endpoint: str, repo_id: str, timeout: float) -> str:
    """One line naming the server and the cause, without the token or a traceback."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    where = f"push of {repo_id} to {endpoint} failed"
    chain = [exc, exc.__cause__, exc.__context__]
    if any(isinstance(e, httpx2.TimeoutException) for e in chain):
        return f"{where}: no answer within --timeout {timeout:g}s"
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        hint = " (check HF_TOKEN or `hf auth login`)" if status in (401, 403) else ""
        message = (exc.server_message or str(exc)).strip().splitlines()[0]
        return f"{where}: HTTP {status}: {message}{hint}"
    if isinstance(exc, httpx2.HTTPError):
        return f"{where}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'network error'}"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{where}: {text}"
