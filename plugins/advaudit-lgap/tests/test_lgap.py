"""LGAP end to end with tiny, randomly initialised models built here (real weights cannot be downloaded).

These tests check the plumbing: captioning, latent noising to strength t, caption-conditioned
denoising, decoding, shapes, seeding, the BPDA/EOT path in advaudit, and the missing-file errors.
They say nothing about LGAP's effectiveness, which needs the pretrained BLIP and latent diffusion
weights.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch

from advaudit.cli import main
from advaudit.defenses import build_stack
from advaudit.errors import ModelError

WORDS = ["a", "photo", "of", "cat", "dog", "digit", "the"]


def build_captioner(path: Path) -> Path:
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", *WORDS, *string.ascii_lowercase]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizer(str(path / "vocab.txt"), bos_token="[DEC]")
    proc = BlipProcessor(BlipImageProcessor(size={"height": 16, "width": 16}), tok)
    torch.manual_seed(0)
    cfg = BlipConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "intermediate_size": 16, "bos_token_id": 5, "pad_token_id": 0, "sep_token_id": 3,
                     "max_position_embeddings": 32, "encoder_hidden_size": 16},
        vision_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
                       "image_size": 16, "patch_size": 8},
        projection_dim=16,
    )
    BlipForConditionalGeneration(cfg).save_pretrained(path, safe_serialization=True)
    proc.save_pretrained(path)
    return path


def build_diffusion(path: Path) -> Path:
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 8), latent_channels=4,
        norm_num_groups=4, layers_per_block=1,
    )
    tdir = path / "tokenizer"
    tdir.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase:
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (tdir / "vocab.json").write_text(json.dumps(vocab))
    (tdir / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(tdir / "vocab.json"), str(tdir / "merges.txt"), model_max_length=16)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=16,
                                        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1))
    unet.save_pretrained(path / "unet", safe_serialization=True)
    vae.save_pretrained(path / "vae", safe_serialization=True)
    text.save_pretrained(path / "text_encoder", safe_serialization=True)
    tok.save_pretrained(tdir)
    DDIMScheduler(num_train_timesteps=100, beta_schedule="scaled_linear").save_pretrained(path / "scheduler")
    return path


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lgap")
    return build_captioner(root / "blip"), build_diffusion(root / "ldm")


def spec(dirs, **kw) -> str:
    cap, ldm = dirs
    extra = "".join(f",{k}={v}" for k, v in kw.items())
    return f"lgap:captioner={cap},diffusion={ldm},steps=10{extra}"


def test_plugin_is_registered():
    from advaudit.registry import get_registry

    assert "lgap" in get_registry().names("defense")


@pytest.mark.parametrize("c", [1, 3])
def test_purifies_end_to_end_shape_range_and_seed(dirs, c):
    (d,) = build_stack([spec(dirs)])
    x = torch.rand(3, c, 12, 12, generator=torch.Generator().manual_seed(0))
    a, b, other = d(x, seed=1), d(x, seed=1), d(x, seed=2)
    assert a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, other)  # randomised, seeded
    assert len(d.last_captions) == 3 and all(isinstance(t, str) for t in d.last_captions)


def test_strength_zero_is_a_plain_autoencoder_pass(dirs):
    (d,) = build_stack([spec(dirs, strength=0.0)])
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(d(x, seed=1), d(x, seed=2))  # no noise, no randomness


def test_bpda_eot_through_lgap_in_front_of_a_model(dirs, tmp_path, capsys):
    repo = Path(__file__).resolve().parents[3]
    model = repo / "sample_models" / "cifar10_resnet20.onnx"
    data = repo / "sample_models" / "data" / "cifar10_test_1k.npz"
    rep = tmp_path / "r.json"
    rc = main(["-q", "attack", str(model), "--data", str(data), "--n", "3", "--attack", "fgsm",
               "--defense", spec(dirs, steps=4), "--adaptive", "all", "--eot", "2", "--eval-draws", "2",
               "--report", str(rep)])
    assert rc == 0
    r = json.loads(rep.read_text())
    assert r["defense"]["randomized"] and set(r["defense"]["modes"]) == {"blind", "bpda", "bpda+eot"}


def test_missing_files_are_one_line_errors(dirs, tmp_path, capsys):
    cap, ldm = dirs
    with pytest.raises(ModelError, match="diffusion directory not found"):
        build_stack([f"lgap:captioner={cap},diffusion={tmp_path / 'nope'}"])
    broken = tmp_path / "ldm"
    broken.mkdir()
    (broken / "unet").mkdir()
    with pytest.raises(ModelError, match="missing unet/config.json"):
        build_stack([f"lgap:captioner={cap},diffusion={broken}"])
    with pytest.raises(ModelError,
                       match="captioner directory .* is missing preprocessor_config.json or processor_config.json"):
        build_stack([f"lgap:captioner={ldm / 'unet'},diffusion={ldm}"])
    out = tmp_path / "p.npz"
    rc = main(["defend", "purify", "--defense", f"lgap:captioner={cap},diffusion={broken}", "--data",
               str(Path(__file__).resolve().parents[3] / "sample_models" / "data" / "mnist_test_1k.npz"),
               "--n", "2", "--out", str(out)])
    assert rc == 2 and not out.exists()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
