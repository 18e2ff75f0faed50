"""LGAP: Language Guided Adversarial Purification (paper 001 of advaudit's reading list).

The input is captioned by an image captioner (BLIP), encoded into the latent space of a text-conditioned
latent diffusion model, noised to strength ``t`` (the forward process up to ``t`` of the schedule)
and denoised conditioned on the caption (classifier-free guidance); the decoded image replaces the
input.  Both models are loaded from local directories the user names (nothing is downloaded):

* ``captioner``: a Hugging Face ``BlipForConditionalGeneration`` directory (``config.json``,
  ``preprocessor_config.json``, tokenizer files, ``*.safetensors`` weights);
* ``diffusion``: a diffusers Stable-Diffusion-layout directory with ``unet/``, ``vae/``,
  ``text_encoder/``, ``tokenizer/`` and ``scheduler/`` (weights as safetensors).

Weights are read from safetensors only (``use_safetensors=True``): no pickle.  The reverse process
uses DDIM (eta = 0) on the directory's noise schedule, so the only randomness is the forward noise,
drawn from advaudit's seeded generator: LGAP is a randomised defence (use ``bpda+eot``).  BPDA
backward: the identity (as in the paper's BPDA evaluation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from advaudit.defenses.base import Defense, need
from advaudit.errors import ModelError

CAPTIONER_FILES = ("config.json", "preprocessor_config.json|processor_config.json")
DIFFUSION_FILES = (
    "unet/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "tokenizer/tokenizer_config.json",
    "scheduler/scheduler_config.json",
)


def check_dir(path: str, files: tuple[str, ...], what: str) -> Path:
    """The directory, or a one-line :class:`ModelError` naming the first missing file."""
    p = Path(path)
    if not p.is_dir():
        raise ModelError(f"LGAP {what} directory not found: {p}",
                         "give a local directory (weights cannot be downloaded)")
    for f in files:
        if not any((p / alt).is_file() for alt in f.split("|")):
            raise ModelError(f"LGAP {what} directory {p} is missing {f.replace('|', ' or ')}")
    if not any(p.rglob("*.safetensors")):
        raise ModelError(f"LGAP {what} directory {p} has no .safetensors weights",
                         "save the model with safe_serialization")
    return p


class _Models:
    """The loaded captioner and diffusion components."""

    def __init__(self, captioner: Path, diffusion: Path) -> None:
        try:
            from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
            from transformers import BlipForConditionalGeneration, BlipProcessor, CLIPTextModel, CLIPTokenizer
        except ImportError as exc:  # pragma: no cover - the package depends on both
            raise ModelError(f"LGAP needs diffusers and transformers ({exc})", "pip install advaudit-lgap") from None
        try:
            self.processor = BlipProcessor.from_pretrained(captioner, local_files_only=True)
            self.captioner = BlipForConditionalGeneration.from_pretrained(
                captioner, local_files_only=True, use_safetensors=True).eval()
            kw: dict[str, Any] = {"local_files_only": True}
            self.unet = UNet2DConditionModel.from_pretrained(
                diffusion, subfolder="unet", use_safetensors=True, **kw).eval()
            self.vae = AutoencoderKL.from_pretrained(diffusion, subfolder="vae", use_safetensors=True, **kw).eval()
            self.text_encoder = CLIPTextModel.from_pretrained(
                diffusion, subfolder="text_encoder", use_safetensors=True, **kw).eval()
            self.tokenizer = CLIPTokenizer.from_pretrained(diffusion, subfolder="tokenizer", **kw)
            self.scheduler = DDIMScheduler.from_pretrained(diffusion, subfolder="scheduler", **kw)
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
            msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"LGAP cannot load its models: {msg}") from None
        for m in (self.captioner, self.unet, self.vae, self.text_encoder):
            m.requires_grad_(False)
        self.factor = 2 ** (len(self.vae.config.block_out_channels) - 1)


class LGAP(Defense):
    """Caption-guided latent-diffusion purification (LGAP): caption, noise the latent to t, denoise.

    Parameters: ``captioner`` and ``diffusion`` (local directories, required), ``strength`` (the
    paper's noise parameter t: 0.5 for CIFAR, 0.1 for ImageNet), ``steps`` (DDIM steps of the full
    schedule; ``strength * steps`` are run), ``guidance`` (classifier-free guidance scale),
    ``size`` (side the image is resized to for the diffusion model; 0 keeps it, rounded up to the
    VAE's factor), ``caption_tokens`` (max new caption tokens).  Effective only with the real
    pretrained weights (BLIP and a latent diffusion model).
    """

    name: ClassVar[str] = "lgap"
    randomized: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {
        "captioner": "",
        "diffusion": "",
        "strength": 0.5,
        "steps": 50,
        "guidance": 7.5,
        "size": 0,
        "caption_tokens": 20,
    }

    def check_params(self) -> None:
        need(bool(self.captioner), self.name, "needs captioner=DIR (a local BLIP captioning model)")
        need(bool(self.diffusion), self.name, "needs diffusion=DIR (a local text-conditioned latent diffusion model)")
        need(0.0 <= self.strength <= 1.0, self.name, f"strength must be in [0, 1], got {self.strength}")
        need(self.steps >= 1, self.name, f"steps must be >= 1, got {self.steps}")
        need(self.guidance >= 0, self.name, f"guidance must be >= 0, got {self.guidance}")
        need(self.size >= 0, self.name, f"size must be >= 0, got {self.size}")
        self._captioner_dir = check_dir(self.captioner, CAPTIONER_FILES, "captioner")
        self._diffusion_dir = check_dir(self.diffusion, DIFFUSION_FILES, "diffusion")
        self._models: _Models | None = None

    @property
    def models(self) -> _Models:
        if self._models is None:
            self._models = _Models(self._captioner_dir, self._diffusion_dir)
        return self._models

    # ------------------------------------------------------------------ stages
    def caption(self, x: torch.Tensor) -> list[str]:
        """Greedy captions of images ``x`` (N, C, H, W) in [0, 1]."""
        m = self.models
        rgb = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]
        images = [(img.permute(1, 2, 0).cpu().numpy() * 255).round().clip(0, 255).astype("uint8") for img in rgb]
        inputs = m.processor(images=images, return_tensors="pt")
        with torch.no_grad():
            ids = m.captioner.generate(pixel_values=inputs["pixel_values"], max_new_tokens=int(self.caption_tokens),
                                       do_sample=False, num_beams=1)
        return [c.strip() for c in m.processor.batch_decode(ids, skip_special_tokens=True)]

    def _embed(self, texts: list[str]) -> torch.Tensor:
        m = self.models
        tok = m.tokenizer(texts, padding="max_length", max_length=m.tokenizer.model_max_length, truncation=True,
                          return_tensors="pt")
        return m.text_encoder(tok.input_ids)[0]

    def purify(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        m = self.models
        n, c, h, w = x.shape
        captions = self.caption(x)
        img = x.expand(-1, 3, -1, -1) if c == 1 else x[:, :3]
        side = int(self.size) or max(h, w)
        side = -(-side // m.factor) * m.factor
        if (h, w) != (side, side):
            img = F.interpolate(img, size=(side, side), mode="bilinear", align_corners=False)
        with torch.no_grad():
            scale = float(getattr(m.vae.config, "scaling_factor", 0.18215))
            latents = m.vae.encode(img * 2 - 1).latent_dist.mean * scale
            steps = int(self.steps)
            m.scheduler.set_timesteps(steps)
            run = min(int(round(steps * float(self.strength))), steps)
            if run > 0:
                timesteps = m.scheduler.timesteps[steps - run :]
                noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
                latents = m.scheduler.add_noise(latents, noise, timesteps[:1].repeat(n))
                cond = self._embed(captions)
                guided = float(self.guidance) > 1.0
                context = torch.cat([self._embed([""] * n), cond]) if guided else cond
                for t in timesteps:
                    inp = torch.cat([latents, latents]) if guided else latents
                    eps = m.unet(inp, t, encoder_hidden_states=context).sample
                    if guided:
                        e_unc, e_txt = eps.chunk(2)
                        eps = e_unc + float(self.guidance) * (e_txt - e_unc)
                    latents = m.scheduler.step(eps, t, latents, eta=0.0).prev_sample
            out = (m.vae.decode(latents / scale).sample + 1) / 2
        if out.shape[-2:] != (h, w):
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        out = out.clamp(0, 1)
        if c == 1:
            out = out.mean(dim=1, keepdim=True)
        elif c > 3:
            out = torch.cat([out, x[:, 3:]], dim=1)
        self.last_captions = captions
        return out.to(x.dtype)
