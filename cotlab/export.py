"""Export a trained stage as an ordinary Hugging Face model: base + every adapter, merged.

A run's DPO or GRPO adapter was trained on top of the SFT adapter merged into the base
(`cotlab_base_adapters.json`), so it only means something with that chain underneath; the
export merges the whole chain in order, as `load_model(..., adapter=...)` does, and saves a
checkpoint that plain `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`
load without cotlab (and that vLLM or llama.cpp's converter read as they read any checkpoint).
"""

from __future__ import annotations

import json
from pathlib import Path

from cotlab import CotlabError
from cotlab.io import atomic_write_text
from cotlab.models import adapter_chain, cache_dir, hub_id, load_base, load_tokenizer, publish, weights_digest


def trained_on(adapter: str | Path) -> dict:
    """The recipe an adapter was trained with (recipe.json, written by cotlab.training.finish)."""
    recipe = Path(adapter) / "recipe.json"
    if not recipe.is_file():
        raise CotlabError(f"{adapter} has no recipe.json: it was not trained by cotlab, so its base is unknown")
    return json.loads(recipe.read_text())


def export_merged(adapter: str | Path, out: str | Path, dtype: str | None = None, push_to_hub: str | None = None) -> Path:
    """Write base + the adapter chain, merged, as a full model in `out` (new or empty), in the
    dtype the stage trained in unless `dtype` says otherwise; optionally push it to the hub."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise CotlabError(f"{out} already exists and is not empty: an export never overwrites")
    recipe = trained_on(adapter)
    chain = adapter_chain(str(adapter))
    model = load_base(recipe["model"], dtype or recipe.get("dtype", "auto"), merge=chain)
    tokenizer = load_tokenizer(recipe["model"])
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    atomic_write_text(out / "README.md", merged_card(recipe["model"], chain, model.dtype))
    if push_to_hub:
        try:
            model.push_to_hub(push_to_hub)
            tokenizer.push_to_hub(push_to_hub)
        except Exception as e:  # no network, no token, no write access: the hub raises many types
            lines = str(e).strip().splitlines()
            raise CotlabError(f"wrote {out}, but could not push it to the hub as {push_to_hub}: "
                              f"{type(e).__name__}: {lines[0] if lines else '(no message)'}") from None
    return out


def merged_chain(adapter: str | Path) -> Path:
    """`export_merged` of the adapter's chain into the cache, once per chain (by its weights'
    digest, so a retrained stage gets a fresh folder): what a server that reads checkpoints
    (vLLM) needs for a stage trained on top of another."""
    import tempfile

    target = cache_dir() / "merged" / f"{Path(trained_on(adapter)['model']).name}-{weights_digest(adapter)}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".merge-"))
    export_merged(adapter, tmp)
    return publish(tmp, target)


def merged_card(model: str, chain: list[str], dtype) -> str:
    """A model card with the hub's metadata (base_model, tags) and what was merged, in order."""
    from huggingface_hub import ModelCard, ModelCardData

    base = hub_id(model)
    data = ModelCardData(library_name="transformers", pipeline_tag="text-generation",
                         tags=["cotlab", "trl", "merged"] + ([f"base_model:merge:{base}"] if base else []),
                         base_model=base)
    steps = "\n".join(f"{i}. `{path}`" for i, path in enumerate(chain, 1))
    text = (f"# cotlab merged model\n\nBase model: `{model}`{f' = `{base}`' if base else ''}, with these LoRA "
            f"adapters merged into its weights in order ({str(dtype).removeprefix('torch.')}):\n\n{steps}\n\n"
            "Each adapter's README.md and recipe.json describe how it was trained.\n")
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{text}"))
