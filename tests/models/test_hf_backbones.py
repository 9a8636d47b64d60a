"""Hugging Face backbones (LLaVA 1.5, LLaVA-NeXT, Qwen2-VL) with LoRA, at tiny random configs.

Each checkpoint is written to a directory and loaded from it, as a user's would be. Checks:
slice spans on the right tokens, image pooling on exactly that image's positions, labels,
parity with transformers (processor expansion, logits, ``model.generate``), LoRA invariants
(only the adapter changes; save -> load; merged export) and the Sugar loop on each family.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from sugar.data.collate import IGNORE_INDEX
from sugar.data.schema import Sample, Segment
from sugar.models.base import backbone_class, prompt_of
from sugar.models.bundle import load_bundle, save_bundle
from sugar.models.hf import HFMLLM
from sugar.models.hf_chat import chat_text
from sugar.models.prefix import slice_states
from tests.models.hf_checkpoints import (
    llava_checkpoint,
    qwen2vl_checkpoint,
    write_images,
)

FAMILIES = ["hf-llava", "hf-llava-next", "hf-qwen2-vl"]


@pytest.fixture(scope="module")
def hf_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images and one tiny checkpoint directory per family."""
    root = tmp_path_factory.mktemp("hf")
    write_images(root)
    llava_checkpoint(root / "hf-llava")
    llava_checkpoint(root / "hf-llava-next", next_=True)
    qwen2vl_checkpoint(root / "hf-qwen2-vl")
    return root


def build(root: Path, family: str, **options: object) -> HFMLLM:
    model = backbone_class(family).create(str(root / family), lora_rank=4, **options)
    assert isinstance(model, HFMLLM)
    return model


ONE = Sample(
    "one",
    [
        Segment.image_("img/wide.png"),
        Segment.text_("what colour is the circle ?"),
        Segment.text_("a red circle . Two dogs !", role="target"),
    ],
)
THREE = Sample(
    "three",
    [
        Segment.text_("the picture shows a cat ."),
        Segment.image_("img/wide.png"),
        Segment.image_("img/tall.png"),
        Segment.text_("a dog . A star !"),
        Segment.image_("img/big.png"),
    ],
)


def expected_counts(model: HFMLLM, family: str, images: list[str], root: Path) -> list[int]:
    """Image tokens per image, worked out independently of the adapter's counting."""
    from PIL import Image

    sizes = [Image.open(root / path).size[::-1] for path in images]  # (height, width)
    if family == "hf-llava":
        return [16] * len(images)  # (32 / 8)^2 patches + CLS - CLS ("default" strategy)
    if family == "hf-qwen2-vl":
        grids = model.image_processor(
            images=[Image.open(root / p).convert("RGB") for p in images], return_tensors="pt"
        )["image_grid_thw"]
        return [int(g.prod()) // 4 for g in grids]
    assert model.processor is not None
    return [
        model.processor._get_number_of_features(h, w, 32, 32) - 1  # "default": CLS dropped
        for h, w in sizes
    ]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("sample", [ONE, THREE], ids=["1-image", "3-images"])
def test_spans_sit_on_their_tokens(hf_root: Path, family: str, sample: Sample) -> None:
    model = build(hf_root, family)
    batch = model.collate([ONE, sample], hf_root)
    row = 1
    ids = batch.input_ids[row]
    image_id = model.layout.image_token_id
    spans = batch.spans[row]
    counts = expected_counts(model, family, sample.images, hf_root)
    image_spans = [s for s in spans if s.kind == "image"]
    assert [s.end - s.start for s in image_spans] == counts
    if family == "hf-llava-next" and sample is THREE:
        assert len(set(counts)) == 3  # multi-crop: the count follows each image's size
    if family == "hf-qwen2-vl" and sample is THREE:
        assert counts[0] != counts[1]  # two images of different sizes
    # the spans, in order, cover exactly the row's image tokens (two images may be adjacent
    # when the template puts nothing that tokenises between them)
    covered = [t for span in image_spans for t in range(span.start, span.end)]
    assert covered == (ids == image_id).nonzero().squeeze(1).tolist()
    texts = [s for s in spans if s.kind == "text"]
    words = [model.tokenizer.decode(ids[s.start : s.end]) for s in texts]
    if sample is ONE:
        assert words == ["what colour is the circle ?", "a red circle .", "Two dogs !"]
    else:
        assert words == ["the picture shows a cat .", "a dog .", "A star !"]


@pytest.mark.parametrize("family", ["hf-llava", "hf-llava-next"])
def test_sequence_equals_the_processors_expansion(hf_root: Path, family: str) -> None:
    from PIL import Image

    model = build(hf_root, family)
    assert model.processor is not None
    for sample in (ONE, THREE):
        for prompt in (False, True):
            batch = model._collate([sample], hf_root, "sentence", True, prompt)
            text = chat_text(sample, model.layout, generation_prompt=prompt)
            images = [Image.open(hf_root / p).convert("RGB") for p in sample.images]
            reference = model.processor(text=[text], images=images, return_tensors="pt")
            assert batch.input_ids.tolist() == reference["input_ids"].tolist()
            torch.testing.assert_close(
                batch.model_inputs["pixel_values"], reference["pixel_values"]
            )


@pytest.mark.parametrize("family", FAMILIES)
def test_image_pooling_reads_exactly_that_images_positions(hf_root: Path, family: str) -> None:
    model = build(hf_root, family).eval()
    batch = model.collate([THREE, ONE], hf_root)
    hidden = model(batch).hidden.detach().requires_grad_(True)  # (B, T, D)
    spans = batch.spans[0]
    for span in spans:
        if span.kind != "image":
            continue
        state = slice_states(hidden, batch.spans, torch.tensor([0]), torch.tensor([span.slice]))
        torch.testing.assert_close(state[0], hidden[0, span.start : span.end].mean(0))
        (grad,) = torch.autograd.grad(state.sum(), hidden)
        touched = grad.abs().sum(-1).nonzero().tolist()
        assert touched == [[0, t] for t in range(span.start, span.end)]


@pytest.mark.parametrize("family", FAMILIES)
def test_labels_supervise_only_target_text_and_its_end(hf_root: Path, family: str) -> None:
    model = build(hf_root, family)
    batch = model.collate([ONE, THREE], hf_root)
    target = [s for s in batch.spans[0] if s.role == "target"]
    start, end = target[0].start, target[-1].end
    supervised = (batch.labels[0] != IGNORE_INDEX).nonzero().squeeze(1).tolist()
    assert supervised == list(range(start, end + 1))  # the target's tokens and the end token
    assert int(batch.labels[0, end]) == model.layout.eos_id
    assert bool((batch.labels[1] == IGNORE_INDEX).all())  # a context-only sample
    image_positions = batch.input_ids == model.layout.image_token_id
    assert bool((batch.labels[image_positions] == IGNORE_INDEX).all())
    assert bool((batch.labels[~batch.attention_mask] == IGNORE_INDEX).all())


def test_a_text_holding_the_image_token_is_refused(hf_root: Path) -> None:
    model = build(hf_root, "hf-llava")
    bad = Sample("bad", [Segment.image_("img/wide.png"), Segment.text_("a <image> cat .")])
    with pytest.raises(ValueError, match=r"sample 'bad' segment 1.*2 image placeholders for 1"):
        model.collate([bad], hf_root)


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_equals_the_transformers_model(hf_root: Path, family: str) -> None:
    model = build(hf_root, family).eval()
    batch = model.collate([ONE, THREE], hf_root)
    output = model(batch)
    with torch.no_grad():
        reference = model.base(**model._inputs(batch))
    torch.testing.assert_close(output.logits, reference.logits, atol=1e-5, rtol=1e-5)
    assert output.hidden.shape == (*batch.input_ids.shape, model.hidden_size)


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generation_equals_model_generate(hf_root: Path, family: str) -> None:
    model = build(hf_root, family).eval()
    samples = [ONE, THREE]
    got = model.generate_ids(samples, hf_root, max_new_tokens=6)
    if model.processor is not None:  # LLaVA families: the processor's own output
        from PIL import Image

        model.tokenizer.padding_side = "left"
        texts = [chat_text(prompt_of(s), model.layout, generation_prompt=True) for s in samples]
        images = [Image.open(hf_root / p).convert("RGB") for s in samples for p in s.images]
        inputs = dict(model.processor(text=texts, images=images, return_tensors="pt", padding=True))
    else:  # Qwen2-VL's processor class needs torchvision: the adapter's left-padded prompts
        inputs = model._inputs(model._collate(samples, hf_root, "segment", True, True))
    with torch.no_grad():
        out = model.base.generate(
            **inputs, max_new_tokens=6, do_sample=False,
            pad_token_id=model.pad_id, eos_token_id=model.layout.eos_id,
        )  # fmt: skip
    for row, ids in enumerate(out[:, inputs["input_ids"].shape[1] :].tolist()):
        cut = [t for t in ids]
        for stop in (model.layout.eos_id, model.pad_id):
            cut = cut[: cut.index(stop)] if stop in cut else cut
        assert got[row] == cut
    texts = model.generate(samples, hf_root, max_new_tokens=6)
    assert texts == [model.tokenizer.decode(ids, skip_special_tokens=True) for ids in got]
    sampled = [model.generate(samples, hf_root, max_new_tokens=4, temperature=1.0, seed=3)
               for _ in range(2)]  # fmt: skip
    assert sampled[0] == sampled[1]


def _step(model: HFMLLM, root: Path) -> dict[str, torch.Tensor]:
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=1e-2)
    model.train()
    output = model(model.collate([ONE, THREE], root))
    (output.logits.float().pow(2).mean() + output.hidden.pow(2).mean()).backward()
    optimiser.step()
    return before


@pytest.mark.parametrize("family", ["hf-llava", "hf-qwen2-vl"])
@pytest.mark.parametrize("freeze_projector", [True, False])
def test_lora_step_changes_only_the_adapter(
    hf_root: Path, family: str, freeze_projector: bool
) -> None:
    model = build(hf_root, family, freeze_projector=freeze_projector)
    projector = model.projector_module
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            assert parameter.requires_grad and "language_model" in name, name
    before = _step(model, hf_root)
    changed = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert changed and all(
        "lora_" in k or (not freeze_projector and projector in k and "modules_to_save" in k)
        for k in changed
    ), sorted(changed)[:5]
    assert any("lora_" in k for k in changed)
    assert freeze_projector or any(projector in k for k in changed)
    assert not any(model.vision_module in k and projector not in k for k in changed)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_and_merged_export_keep_the_logits(
    hf_root: Path, family: str, tmp_path: Path
) -> None:
    model = build(hf_root, family, freeze_projector=family != "hf-llava-next")
    _step(model, hf_root)  # a trained adapter (B is zero at init)
    model.eval()
    batch = model.collate([ONE, THREE], hf_root)
    with torch.no_grad():
        logits = model(batch).logits
    save_bundle(tmp_path / "bundle", model)
    files = set(json.loads((tmp_path / "bundle" / "model.json").read_text())["files"])
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    loaded = load_bundle(tmp_path / "bundle").model
    assert isinstance(loaded, HFMLLM)
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(loaded.collate([ONE, THREE], hf_root)).logits, logits)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, atol=0, rtol=0)
    merged_dir = model.export_merged(tmp_path / "merged")
    import transformers

    merged = getattr(transformers, model.model_class).from_pretrained(merged_dir).eval()
    with torch.no_grad():
        reference = merged(**model._inputs(batch)).logits
    torch.testing.assert_close(reference, logits, atol=1e-5, rtol=1e-4)


def test_a_different_base_is_refused(hf_root: Path, tmp_path: Path) -> None:
    model = build(hf_root, "hf-llava")
    save_bundle(tmp_path / "bundle", model)
    llava_checkpoint(hf_root / "hf-llava", seed=1)  # the same path now holds other weights
    try:
        with pytest.raises(ValueError, match="fingerprint"):
            load_bundle(tmp_path / "bundle")
    finally:
        llava_checkpoint(hf_root / "hf-llava", seed=0)


def test_a_checkpoint_that_needs_a_download_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="nobody/no-such-llava"):
        backbone_class("hf-llava").create("nobody/no-such-llava", lora_rank=4)
    with pytest.raises(ValueError, match=r"needs model\.pretrained"):
        backbone_class("hf-llava").create(None)


@pytest.mark.parametrize("family", ["hf-llava", "hf-qwen2-vl"])
def test_the_sugar_loop_and_embed_run(hf_root: Path, family: str, tmp_path: Path) -> None:
    from sugar.config import load_config
    from sugar.data.jsonl import write_samples
    from sugar.embed import embed_vectors
    from sugar.models.prefix import projector_from_extras
    from sugar.train.loop import train
    from tests.train.fake_teacher import FakeTeacher

    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    for name in ("wide.png", "tall.png", "big.png", "square.png"):
        (data / "img" / name).write_bytes((hf_root / "img" / name).read_bytes())
    pairs = [
        Sample(f"c{i}", [Segment.image_(f"img/{name}"), Segment.text_(text, role="target")])
        for i, (name, text) in enumerate(
            [
                ("wide.png", "a red circle ."),
                ("tall.png", "two blue squares . a cat !"),
                ("big.png", "a green star left of a dog ."),
                ("square.png", "the yellow cat ."),
            ]
        )
    ]
    write_samples(data / "train.jsonl", [*pairs, THREE])
    write_samples(data / "val.jsonl", pairs)
    cfg = load_config(
        None,
        [
            f"data.root={data}", f"run.output_dir={tmp_path / 'run'}", f"model.family={family}",
            f"model.pretrained={hf_root / family}", "model.lora.rank=4", "train.steps=2",
            "train.batch_size=3", "train.log_every=1", "train.eval_every=2",
            "train.eval_samples=4", "train.select_metric=val_t2i_r1", "train.lr=1e-3",
            "data.train=[train.jsonl]", "data.val=[val.jsonl]",
        ],
    )  # fmt: skip
    result = train(cfg, teacher=FakeTeacher(), progress=False)
    losses = [h for h in result.history if "loss" in h]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in losses)
    assert {"lm_loss", "structure_loss"} <= set(losses[0])
    # the training checkpoint holds the adapter, never the frozen base weights
    from sugar.train.checkpoint import latest_checkpoint, load_checkpoint

    checkpoint = latest_checkpoint(tmp_path / "run")
    assert checkpoint is not None
    saved = load_checkpoint(checkpoint)["model"]
    assert saved and all("lora_" in name for name in saved), sorted(saved)[:5]
    bundle = load_bundle(result.bundle)
    projector, _ = projector_from_extras(bundle.extras, bundle.extra_specs, "test")
    assert projector is not None
    vectors = embed_vectors(bundle.model, projector, [*pairs, THREE], data, batch_size=2)
    assert vectors.shape == (5, projector.dim)
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(5))


def test_sugar_export_writes_a_merged_checkpoint_through_the_cli(
    hf_root: Path, tmp_path: Path
) -> None:
    import transformers
    from typer.testing import CliRunner

    from sugar.cli import app

    model = build(hf_root, "hf-llava").eval()
    save_bundle(tmp_path / "bundle", model)
    out = tmp_path / "merged"
    args = ["export", "--model", str(tmp_path / "bundle"), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "sugar_extras.json").read_text()) == {}
    merged = transformers.LlavaForConditionalGeneration.from_pretrained(out).eval()
    batch = model.collate([ONE, THREE], hf_root)
    with torch.no_grad():
        torch.testing.assert_close(
            merged(**model._inputs(batch)).logits, model(batch).logits, atol=1e-5, rtol=1e-4
        )
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "--force" in again.output
