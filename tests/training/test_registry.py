"""The adapter registry: register a saved LoRA, hot-load it into the writer server, make it active."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse
from safetensors.torch import load_file, save_file

from mesu_web.errors import ApplicationError
from tests.factories import StoryFactory
from training import selectors, services
from training.models import WriterAdapter
from writer.models import GenerationRequest
from writer.services import generation_request_create


@pytest.fixture
def adapter_dir(settings, tmp_path):
    """The writer's adapter folder for this test only."""
    folder = tmp_path / "adapters"
    settings.WRITER_ADAPTER_DIR = folder
    return folder


@pytest.fixture
def down_server(settings):
    """The vllm engine pointed at a port where nothing listens."""
    from writer.engines import vllm

    settings.WRITER_ENGINE = "vllm"
    settings.WRITER_BASE_URL = "http://127.0.0.1:9/v1"
    settings.WRITER_MAX_RETRIES = 0
    vllm.reset_caches()
    yield settings
    vllm.reset_caches()


def zeroed_copy(lora: Path, out: Path) -> Path:
    """A copy of `lora` whose B matrices are all zero: what an adapter that never learned looks like."""
    shutil.copytree(lora, out)
    tensors = load_file(str(out / "adapter_model.safetensors"))
    save_file(
        {k: (v * 0 if "lora_B" in k else v) for k, v in tensors.items()},
        str(out / "adapter_model.safetensors"),
    )
    return out


def test_register_copies_checks_and_loads(db, users, adapter_dir, lora_adapter_dir, local_engine):
    adapter = services.adapter_register(name="night-shift", source_dir=lora_adapter_dir, user=users["root"])
    assert adapter.path == str(adapter_dir / "night-shift")
    assert (adapter_dir / "night-shift" / "adapter_model.safetensors").read_bytes() == (
        lora_adapter_dir / "adapter_model.safetensors"
    ).read_bytes()
    assert adapter.lora_nonzero is True and adapter.lora_rank == 8
    assert adapter.loaded_at is not None and adapter.load_error == ""  # the local engine loads on use
    assert not adapter.is_active and selectors.active_adapter_name() == ""


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("../escape", "not a valid adapter name"),
        ("", "Give the adapter a name"),
        ("smollm2", "base model's name"),
    ],
)
def test_register_refuses_bad_names(db, adapter_dir, lora_adapter_dir, settings, name, problem):
    settings.WRITER_MODEL = "smollm2"
    with pytest.raises(ApplicationError, match=problem):
        services.adapter_register(name=name, source_dir=lora_adapter_dir, load=False)
    assert not WriterAdapter.objects.exists()


def test_register_refuses_bad_folders(db, adapter_dir, lora_adapter_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ApplicationError, match="no adapter_config.json"):
        services.adapter_register(name="a", source_dir=tmp_path / "empty", load=False)
    with pytest.raises(ApplicationError, match="no adapter_config.json"):
        services.adapter_register(name="a", source_dir=tmp_path / "missing", load=False)
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    shutil.copy(lora_adapter_dir / "adapter_config.json", no_weights)
    with pytest.raises(ApplicationError, match="No adapter weights"):
        services.adapter_register(name="a", source_dir=no_weights, load=False)
    garbled = tmp_path / "garbled"
    shutil.copytree(lora_adapter_dir, garbled)
    (garbled / "adapter_config.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(ApplicationError, match="not readable JSON"):
        services.adapter_register(name="a", source_dir=garbled, load=False)
    assert not WriterAdapter.objects.exists() and not (adapter_dir / "a").exists()


def test_names_are_never_reused(db, adapter_dir, lora_adapter_dir, tmp_path):
    services.adapter_register(name="v1", source_dir=lora_adapter_dir, load=False)
    with pytest.raises(ApplicationError, match="already registered"):
        services.adapter_register(name="v1", source_dir=lora_adapter_dir, load=False)
    # A folder left under a name by someone else, with other weights, is not silently served.
    other = zeroed_copy(lora_adapter_dir, tmp_path / "other")
    shutil.copytree(other, adapter_dir / "v2")
    with pytest.raises(ApplicationError, match="already holds different files"):
        services.adapter_register(name="v2", source_dir=lora_adapter_dir, load=False)


def test_activation_is_one_click_and_exclusive(db, users, adapter_dir, lora_adapter_dir, local_engine):
    first = services.adapter_register(name="first", source_dir=lora_adapter_dir)
    second = services.adapter_register(name="second", source_dir=lora_adapter_dir)
    client = Client()
    client.force_login(users["root"])
    response = client.post(reverse("training:adapter_activate", args=[first.pk]), follow=True)
    assert "first now writes every new chapter" in response.content.decode()
    assert selectors.active_adapter_name() == "first"
    services.adapter_activate(adapter=second)
    assert list(WriterAdapter.objects.filter(is_active=True).values_list("name", flat=True)) == ["second"]
    # New requests use the active adapter; an explicit adapter still wins.
    story = StoryFactory(owner=users["alice"])
    request = generation_request_create(story=story, user=users["alice"], enqueue=False)
    assert request.adapter == "second"
    services.adapter_deactivate()
    request = generation_request_create(story=story, user=users["alice"], enqueue=False)
    assert request.adapter == "" and GenerationRequest.objects.count() == 2


def test_concurrent_activations_leave_one_active(
    transactional_db, adapter_dir, lora_adapter_dir, local_engine
):
    adapters = [services.adapter_register(name=f"a{i}", source_dir=lora_adapter_dir) for i in range(6)]
    errors: list[Exception] = []

    def activate(adapter: WriterAdapter) -> None:
        from django.db import connection

        try:
            services.adapter_activate(adapter=adapter)
        except Exception as exc:  # noqa: BLE001 (collected and asserted below)
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=activate, args=(a,)) for a in adapters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert WriterAdapter.objects.filter(is_active=True).count() == 1


def test_an_adapter_that_did_not_learn_cannot_be_activated(
    db, adapter_dir, lora_adapter_dir, tmp_path, local_engine
):
    zero = services.adapter_register(name="zero", source_dir=zeroed_copy(lora_adapter_dir, tmp_path / "zero"))
    assert zero.lora_nonzero is False and zero.metrics["lora_zero_tensors"]
    with pytest.raises(ApplicationError, match="did not learn"):
        services.adapter_activate(adapter=zero)
    assert selectors.active_adapter_name() == ""


def test_a_down_server_leaves_a_reason_and_blocks_activation(
    db, users, adapter_dir, lora_adapter_dir, down_server
):
    adapter = services.adapter_register(name="offline", source_dir=lora_adapter_dir)
    assert adapter.loaded_at is None and "not answering" in adapter.load_error
    with pytest.raises(ApplicationError, match="could not be loaded"):
        services.adapter_activate(adapter=adapter)
    assert not WriterAdapter.objects.filter(is_active=True).exists()
    client = Client()
    client.force_login(users["root"])
    page = client.get(reverse("training:adapter_list")).content.decode()
    assert "offline" in page and "not answering" in page


@pytest.mark.vllm
@pytest.mark.slow
def test_hot_load_into_the_real_vllm_server(db, users, adapter_dir, lora_adapter_dir, vllm_settings):
    import uuid

    from writer.engines import get_engine, resolve_adapter
    from writer.engines.base import Sampling

    name = f"reg-{uuid.uuid4().hex[:8]}"  # vLLM keeps a name's first weights: a fresh name per run
    client = Client()
    client.force_login(users["root"])
    response = client.post(
        reverse("training:adapter_list"), {"name": name, "path": str(lora_adapter_dir)}, follow=True
    )
    assert f"Registered {name} and loaded it" in response.content.decode()
    engine = get_engine("vllm")
    assert name in engine.list_models()
    adapter = WriterAdapter.objects.get(name=name)
    services.adapter_activate(adapter=adapter)
    result = engine.generate(
        [{"role": "user", "content": "Say hello."}],
        n=1,
        sampling=Sampling(max_tokens=4),
        adapter=resolve_adapter(name),
    )
    assert result.model == name and result.completions[0].tokens > 0


def test_register_from_the_page_shows_form_errors(db, users, adapter_dir, tmp_path):
    client = Client()
    client.force_login(users["root"])
    response = client.post(reverse("training:adapter_list"), {"name": "x", "path": str(tmp_path / "nope")})
    assert response.status_code == 200 and "no adapter_config.json" in response.content.decode()


def test_register_adapter_command(db, adapter_dir, lora_adapter_dir, local_engine):
    import io
    import json

    from django.core.management import call_command
    from django.core.management.base import CommandError

    out = io.StringIO()
    call_command(
        "register_adapter", "--path", str(lora_adapter_dir), "--name", "cli", "--activate", stdout=out
    )
    data = json.loads(out.getvalue())
    assert data["name"] == "cli" and data["active"] is True and data["lora_nonzero"] is True
    with pytest.raises(CommandError, match="already registered"):
        call_command("register_adapter", "--path", str(lora_adapter_dir), "--name", "cli")


def test_export_from_the_adapters_page(
    db,
    users,
    adapter_dir,
    lora_adapter_dir,
    local_engine,
    settings,
    tmp_path,
    django_capture_on_commit_callbacks,
):
    settings.TRAINING_EXPORTS_DIR = tmp_path / "exports"
    adapter = services.adapter_register(name="shipit", source_dir=lora_adapter_dir)
    client = Client()
    client.force_login(users["root"])
    url = reverse("training:adapter_export", args=[adapter.pk])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(url, {"formats": ["lora", "merged4"]}, follow=True)
    assert "Exporting shipit (lora, merged4)" in response.content.decode() and len(callbacks) == 1
    export = adapter.exports.get()
    from training.tasks import adapter_export_task

    adapter_export_task.apply(args=[export.pk])  # the real task, in this process
    export.refresh_from_db()
    entries = {e["key"]: e for e in export.entries}
    assert export.status == "succeeded", export.error
    assert entries["lora"]["ok"] and Path(entries["lora"]["path"], "adapter_model.safetensors").is_file()
    assert entries["merged4"]["skipped"] and "CUDA" in entries["merged4"]["message"]
    page = client.get(reverse("training:adapter_list")).content.decode()
    assert entries["lora"]["path"] in page and "CUDA" in page
    # Bad choices are refused before anything is queued.
    assert "Choose at least one" in client.post(url, {"formats": []}, follow=True).content.decode()
    with pytest.raises(ApplicationError, match="GGUF type"):
        services.adapter_export_create(adapter=adapter, formats=["gguf"], gguf_types=[])
    shutil.rmtree(adapter_dir / "shipit")
    with pytest.raises(ApplicationError, match="register the adapter again"):
        services.adapter_export_create(adapter=adapter, formats=["lora"])
    assert adapter.exports.count() == 1


SHIPPED = Path(__file__).resolve().parents[2] / "training" / "shipped" / "mesu-writer-v3"


@pytest.mark.slow
def test_the_shipped_writer_installs_active_lists_and_changes_the_base(
    db, adapter_dir, local_engine, model_dir
):
    """The committed adapter (./dev up runs install_shipped_writer): a real LoRA of SmolLM2 that a new
    install registers AND makes the active writer, that the `adapters` command lists, and that changes
    what the base model predicts."""
    import io
    import json

    import torch
    from django.core.management import call_command
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert services.SHIPPED_WRITER_DIR == SHIPPED
    out = io.StringIO()
    call_command("install_shipped_writer", stdout=out)
    assert json.loads(out.getvalue()) == {
        "name": "mesu-writer-v3",
        "registered": True,
        "active": True,
        "note": "the active writer",
    }
    out = io.StringIO()
    call_command("adapters", stdout=out)
    listed = json.loads(out.getvalue())
    assert [(a["name"], a["active"], a["lora_rank"], a["lora_nonzero"]) for a in listed] == [
        ("mesu-writer-v3", True, 16, True)
    ]
    assert selectors.active_adapter_name() == "mesu-writer-v3"
    assert "Held-out results" in (SHIPPED / "MODEL_CARD.md").read_text()

    torch.set_num_threads(1)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    ids = torch.tensor([[1, 504, 3458, 282, 253, 1236, 28]])
    with torch.no_grad():
        before = base(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(base, str(SHIPPED))
        after = tuned(input_ids=ids).logits
    assert after.shape == before.shape and (after - before).abs().max().item() > 0.01


def test_installing_the_shipped_writer_never_undoes_an_admins_choice(
    db, adapter_dir, lora_adapter_dir, local_engine
):
    # A new install: registered and active.
    first = services.shipped_writer_install(source_dir=lora_adapter_dir, name="shipped")
    assert first == {"name": "shipped", "registered": True, "active": True, "note": "the active writer"}
    # The admin goes back to the base model ("Use the base model"): the next ./dev up leaves it so.
    services.adapter_deactivate()
    again = services.shipped_writer_install(source_dir=lora_adapter_dir, name="shipped")
    assert again == {
        "name": "shipped",
        "registered": False,
        "active": False,
        "note": "already registered; left as it is",
    }
    assert selectors.active_adapter_name() == ""
    # Another adapter active: a newly shipped writer is registered but does not take its place.
    mine = services.adapter_register(name="mine", source_dir=lora_adapter_dir)
    services.adapter_activate(adapter=mine)
    newer = services.shipped_writer_install(source_dir=lora_adapter_dir, name="shipped-v3")
    assert newer == {
        "name": "shipped-v3",
        "registered": True,
        "active": False,
        "note": "mine stays the active writer",
    }
    assert selectors.active_adapter_name() == "mine"


def test_installing_the_shipped_writer_with_the_server_down_keeps_it_registered(
    db, adapter_dir, lora_adapter_dir, down_server
):
    import io
    import json

    from django.core.management import CommandError, call_command

    out = io.StringIO()
    call_command("install_shipped_writer", "--path", str(lora_adapter_dir), "--name", "shipped", stdout=out)
    result = json.loads(out.getvalue())
    assert (result["registered"], result["active"]) == (True, False)
    assert result["note"].startswith("not made active: shipped could not be loaded into the writer")
    assert WriterAdapter.objects.get(name="shipped").load_error
    with pytest.raises(CommandError, match="not a LoRA adapter folder"):
        call_command(
            "install_shipped_writer", "--path", str(adapter_dir / "nothing"), "--name", "x", stdout=out
        )
