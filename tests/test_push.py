"""Push: `llm_tune push` against a local stand-in for the Hub (tests/hub_server.py, HF_ENDPOINT pointing at
it): the uploaded files are exactly the export's, from_pretrained reloads the model from that server, the
token never shows, and a server that never answers fails the push within --timeout in one line."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ENV, ROOT, base_recipe, run_cli, write_recipe
from hub_server import SilentServer, start_hub

pytestmark = pytest.mark.slow  # end-to-end runs of several processes: `make test-slow`, run by CI

TOKEN = "hf_testtoken_4f9a1c"


@pytest.fixture(scope="module")
def run(tiny_model, data_dir, tmp_path_factory) -> Path:
    """A tiny lora run whose recipe exports the merged model at the end of training."""
    root = tmp_path_factory.mktemp("push-run")
    export = {"merge": True, "verify_prompts": 2, "verify_new_tokens": 8}  # quick checks on the tiny model
    recipe = base_recipe(tiny_model, data_dir, root / "run", training={"max_steps": 2}, export=export)
    run_cli(write_recipe(root / "recipe.yaml", recipe))
    return root / "run"


@pytest.fixture
def hub(tmp_path):
    server, state = start_hub(token=TOKEN)
    env = {
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}",
        "HF_HOME": str(tmp_path / "hf-home"),  # no saved login, no cache shared with other tests
        "HF_TOKEN": TOKEN,
    }
    yield state, env
    server.shutdown()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _no_token_anywhere(done: subprocess.CompletedProcess, *folders: Path) -> None:
    assert TOKEN not in done.stdout and TOKEN not in done.stderr
    for folder in folders:
        for path in folder.rglob("*"):
            assert not path.is_file() or TOKEN.encode() not in path.read_bytes(), path


def test_push_merged_uploads_exactly_the_export_and_reloads(run, hub, tmp_path):
    state, env = hub
    done = run_cli("push", run, "--repo-id", "alice/tiny-merged", "--merged", env=env)
    assert "pushed" in done.stdout
    export = run / "export" / "merged"
    assert state.files("alice/tiny-merged") == _files(export)
    assert len(state.commits) == 1  # one commit for the whole folder
    assert {len(b) for b in state.lfs.values()} == {
        len(b) for n, b in _files(export).items() if n.endswith(".safetensors")
    }
    assert f"Bearer {TOKEN}" in state.seen_auth
    _no_token_anywhere(done, run)

    # Plain transformers, no token: the model and tokenizer come back from the server with equal logits.
    code = f"""
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
remote = AutoModelForCausalLM.from_pretrained("alice/tiny-merged")
local = AutoModelForCausalLM.from_pretrained({str(export)!r})
tokenizer = AutoTokenizer.from_pretrained("alice/tiny-merged")
ids = torch.tensor([tokenizer("Add 3 and 4.")["input_ids"]])
with torch.inference_mode():
    print("DIFF", float((remote(input_ids=ids).logits - local(input_ids=ids).logits).abs().max()))
"""
    reload_env = {**ENV, **env, "HF_TOKEN": ""}
    loaded = subprocess.run([sys.executable, "-c", code], env=reload_env, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert "DIFF 0.0" in loaded.stdout
    assert not state.unknown, state.unknown


def test_push_run_dir_exports_the_adapter_first_to_a_branch(run, hub):
    state, env = hub
    done = run_cli("push", run, "--repo-id", "alice/tiny-adapter", "--private", "--revision", "dev", env=env)
    adapter = run / "export" / "adapter"
    assert "exporting first" in done.stdout and (adapter / "export.json").is_file()
    assert state.files("alice/tiny-adapter", "dev") == _files(adapter)
    assert state.files("alice/tiny-adapter", "main") == {}
    assert state.repos["alice/tiny-adapter"]["private"]
    _no_token_anywhere(done, run)
    # pushing again (repo and branch exist) is fine
    run_cli("push", adapter, "--repo-id", "alice/tiny-adapter", "--revision", "dev", env=env)


def test_push_to_a_server_that_never_answers_fails_within_the_timeout(run, tmp_path):
    silent = SilentServer()
    env = {
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": f"http://127.0.0.1:{silent.port}",
        "HF_TOKEN": TOKEN,
        "HF_HOME": str(tmp_path / "hf-home"),
    }
    try:
        started = time.monotonic()
        done = run_cli(
            "push",
            run / "export" / "merged",
            "--repo-id",
            "alice/x",
            "--timeout",
            "2",
            env=env,
            check=False,
            timeout=120,
        )
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no answer within --timeout 2s" in errors[0], done.stderr
    assert "Traceback" not in done.stderr and elapsed < 60
    _no_token_anywhere(done)


def test_push_with_a_wrong_token_is_one_line_without_the_token(run, hub):
    state, env = hub
    done = run_cli(
        "push",
        run / "export" / "merged",
        "--repo-id",
        "alice/x",
        env={**env, "HF_TOKEN": "hf_wrong_secret_value"},
        check=False,
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1 and len(errors) == 1 and "HTTP 401" in errors[0], done.stderr
    assert "hf_wrong_secret_value" not in done.stdout + done.stderr
    assert state.repos == {}


@pytest.mark.parametrize(
    "args, message",
    [
        (["push", "/nonexistent", "--repo-id", "a/b"], "folder not found"),
        (["push", str(ROOT / "recipes"), "--repo-id", "a/b"], "neither a run folder"),
        (["push", "ADAPTER", "--repo-id", "a/b", "--merged"], "not a merged one"),
    ],
)
def test_push_user_mistakes(run, hub, args, message):
    state, env = hub
    if "ADAPTER" in args and not (run / "export" / "adapter" / "export.json").is_file():
        run_cli("export", run)
    args = [str(run / "export" / "adapter") if a == "ADAPTER" else a for a in args]
    done = run_cli(*args, env=env, check=False)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1 and message in errors[0], done.stderr
    assert state.repos == {}


def test_push_refuses_offline_mode(run):
    done = run_cli("push", run / "export" / "merged", "--repo-id", "a/b", check=False)  # ENV has HF_HUB_OFFLINE=1
    assert done.returncode == 2 and "HF_HUB_OFFLINE=1" in done.stderr
