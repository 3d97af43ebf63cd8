"""Training recipes: TRL's own configs plus cotlab's few fields.

`SFTRecipe`, `DPORecipe`, `GRPORecipe` and `DistillRecipe` are subclasses of TRL's `SFTConfig`,
`DPOConfig`, `GRPOConfig` and `DistillationConfig`, so every option TRL knows (`optim`, `weight_decay`, `use_liger_kernel`,
`vllm_gpu_memory_utilization`, `push_to_hub`, `log_completions`, `loss_type`...) can be set in a
recipe file or with `--set`, and the recipe is handed to the trainer as its `args` unchanged.
cotlab adds only what TRL's configs leave to the caller: which model and adapter to start from,
which data, the LoRA/QLoRA set-up, the weights' dtype, (GRPO) which rewards and (on-policy
distillation) which teacher.

Defaults differ from TRL's where a small model on a laptop needs it, and precision is always set
explicitly (TRL defaults to bf16 mixed precision, which older CPUs run slowly): see `_resolve`.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from trl import DistillationConfig, DPOConfig, GRPOConfig, SFTConfig

from cotlab import CotlabError


@dataclass
class _CotlabFields:
    """What cotlab adds to a TRL config; shared by every stage."""

    model: str = field(default="embedded", metadata={"help": "embedded, tiny-random, a folder or a hub id"})
    model_name_or_path: str | None = field(default=None, metadata={
        "help": "TRL's name for `model` (its scripts' ModelConfig): either may be given; it becomes `model`"})
    adapter: str | None = field(default=None, metadata={"help": "start from this adapter (e.g. SFT), merged into the weights"})
    dataset: str = field(default="", metadata={"help": "a datasets folder (save_to_disk) or a JSONL file of TRL rows"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank; 0 means full fine-tuning"})
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | str = "all-linear"
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: LoRA on an NF4-quantised base (bitsandbytes)"})
    dtype: str = field(default="auto", metadata={"help": "the weights' dtype: auto (bf16 where the hardware runs it fast), float32 or bfloat16"})
    merge: bool = field(default=False, metadata={"help": "also write the adapter merged into a full checkpoint"})
    attn_implementation: str | None = field(default=None, metadata={
        "help": "transformers' attention kernel: None (its default, sdpa), eager, sdpa, or flash_attention_2 (pip install flash-attn)"})
    # TRL's and transformers' defaults that cotlab sets otherwise for every stage.
    seed: int = 0
    save_steps: float = 50
    save_total_limit: int | None = 2
    num_train_epochs: float = 1.0
    # TRL turns checkpointing on by default; on a 135M model it costs speed and saves little
    # (README), so the choice is explicit.  transformers 5 renamed the field.
    activation_checkpointing: bool | None = False
    report_to: str | list[str] | None = "none"
    bf16: bool | None = None  # None: chosen from `dtype` and the device (see _resolve)

    def __post_init__(self):
        _resolve(self)
        try:
            super().__post_init__()
        except ValueError as e:  # TRL's and transformers' own checks: keep their words, on one line
            raise CotlabError(f"bad {type(self).__name__} setting: {' '.join(str(e).split())}") from None


def _resolve(recipe) -> None:
    """Choices made before TRL's own __post_init__ sees the values: the precision (explicit, per
    device), `report_to: auto`, and cotlab's checks that give one-line errors."""
    from cotlab.models import resolve_dtype, trainer_precision

    if recipe.model_name_or_path:
        if recipe.model not in ("embedded", recipe.model_name_or_path):
            raise CotlabError(f"model ({recipe.model}) and model_name_or_path ({recipe.model_name_or_path}) name different models: set one")
        # One name from here on: training, model cards and fingerprints read `model` only.
        recipe.model, recipe.model_name_or_path = recipe.model_name_or_path, None
    if recipe.lora_r < 0:
        raise CotlabError(f"lora_r must be 0 (full fine-tuning) or positive, got {recipe.lora_r}")
    if recipe.load_in_4bit and recipe.lora_r == 0:
        raise CotlabError("load_in_4bit (QLoRA) trains a LoRA adapter: set lora_r > 0")
    if getattr(recipe, "guards", "error") not in ("error", "warn", "off"):
        raise CotlabError(f"guards must be error, warn or off, got {recipe.guards!r}")
    if getattr(recipe, "eval_every", 0) < 0:
        raise CotlabError(f"eval_every must be 0 (off) or a number of steps, got {recipe.eval_every}")
    check_engine(recipe)
    if recipe.bf16 is None and not recipe.fp16:
        for key, value in trainer_precision(resolve_dtype(recipe.dtype)).items():
            setattr(recipe, key, value)
    recipe.report_to = resolve_report_to(recipe.report_to)


def sharded_engine(recipe=None) -> str | None:
    """'FSDP' or 'DeepSpeed ZeRO-3' when the weights will be sharded across processes, else None
    (DDP, ZeRO-1/2 or one process).  Read from what `accelerate launch` exports to each process
    (ACCELERATE_USE_FSDP, ACCELERATE_USE_DEEPSPEED + ACCELERATE_DEEPSPEED_ZERO_STAGE) or from the
    recipe's own `fsdp` / `deepspeed` fields (the Trainer's route, e.g. under torchrun)."""
    env = os.environ
    if env.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true") or (recipe is not None and getattr(recipe, "fsdp", None)):
        return "FSDP"
    stage = env.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "") if env.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true") else ""
    deepspeed = getattr(recipe, "deepspeed", None) if recipe is not None else None
    if isinstance(deepspeed, str) and Path(deepspeed).is_file():
        deepspeed = json.loads(Path(deepspeed).read_text())
    if isinstance(deepspeed, dict):
        stage = str(deepspeed.get("zero_optimization", {}).get("stage", stage))
    return "DeepSpeed ZeRO-3" if stage == "3" else None


def check_engine(recipe) -> None:
    """QLoRA and merging need the whole model on each process.  cotlab loads a 4-bit base onto its
    own GPU (device_map = LOCAL_RANK), which FSDP and ZeRO-3 cannot shard; and a merged checkpoint
    is written by the main process alone, which under sharding holds only its shard."""
    engine = sharded_engine(recipe)
    if engine and recipe.load_in_4bit:
        raise CotlabError(f"load_in_4bit (QLoRA) cannot run under {engine}, which shards the weights: "
                          "launch with configs/accelerate/multi_gpu.yaml (DDP) or zero2.yaml, or set load_in_4bit: false")
    if engine and recipe.merge:
        raise CotlabError(f"merge: true cannot run under {engine} (the main process holds only its shard): "
                          "train with merge: false and merge the saved adapter on one process afterwards")


def resolve_report_to(value):
    """'auto' = TensorBoard (logs under output_dir/runs), plus trackio when it is installed."""
    if value != "auto":
        return value
    return [name for name in ("tensorboard", "trackio") if importlib.util.find_spec(name)] or "none"


@dataclass
class SFTRecipe(_CotlabFields, SFTConfig):
    """Supervised fine-tuning: TRL's SFTConfig with cotlab's fields and laptop-sized defaults."""

    output_dir: str | None = "outputs/sft"
    learning_rate: float = 1e-3  # LoRA on a small model wants a much larger step than full fine-tuning
    per_device_train_batch_size: int = 8
    max_length: int | None = 512
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = 0.05  # < 1 is a fraction of all steps (transformers 5 folded warmup_ratio into this)
    logging_steps: float = 5


@dataclass
class DPORecipe(_CotlabFields, DPOConfig):
    """DPO: TRL's DPOConfig with cotlab's fields; a LoRA on top of the (merged) SFT model."""

    output_dir: str | None = "outputs/dpo"
    learning_rate: float = 5e-5
    per_device_train_batch_size: int = 4
    max_length: int | None = 512
    logging_steps: float = 1
    guards: str = field(default="error", metadata={"help": "error | warn | off: the preflight checks (cotlab.guards)"})
    eval_every: int = field(default=0, metadata={"help": "log held-out accuracy every N steps (0: off; needs held_out=)"})


@dataclass
class GRPORecipe(_CotlabFields, GRPOConfig):
    """GRPO with verifiable rewards: TRL's GRPOConfig with cotlab's fields.

    `dataset` may be a task spec (rg:…, hf:…, a GSM8K-format file): GRPO needs only questions and
    gold answers, so `n_prompts` of its train split become the prompts.  `rewards` weights
    cotlab's reward functions by name; TRL's `reward_weights` follows from it.  `guards` stops a
    run whose first `guard_steps` logged steps show no learning signal (cotlab.guards).
    """

    dataset: str = ""
    n_prompts: int = 256
    rewards: dict = field(default_factory=lambda: {"correctness": 1.0, "format": 0.2, "length": 0.0})
    output_dir: str | None = "outputs/grpo"
    learning_rate: float = 1e-4
    max_steps: int = 20
    per_device_train_batch_size: int = 8  # counts completions: a multiple of num_generations
    num_generations: int | None = 4  # the group size
    max_completion_length: int | None = 96  # too short and most chains are cut off: reward stays 0
    beta: float = 0.0  # KL weight (TRL's default 0: no reference model needed)
    logging_steps: float = 1
    use_vllm: bool | None = None  # None: vLLM when installed and a GPU is present
    guards: str = field(default="error", metadata={"help": "error | warn | off: stop a run that cannot learn (cotlab.guards)"})
    guard_steps: int = field(default=2, metadata={"help": "logged steps the learning-signal guard looks at"})
    eval_every: int = field(default=0, metadata={"help": "log held-out accuracy every N steps (0: off; needs held_out=)"})

    def __post_init__(self):
        if self.num_generations is None or self.num_generations < 2:
            raise CotlabError("num_generations must be at least 2: GRPO compares completions within a group")
        check_generation_batch(self, launched_world_size())
        check_completion_length(self)
        if self.use_vllm is None:
            from cotlab.generate import vllm_available

            self.use_vllm = vllm_available()
        if self.use_vllm:
            self.vllm_mode = self.vllm_mode or "colocate"
            check_vllm_layout(self, launched_world_size())
        super().__post_init__()


@dataclass
class DistillRecipe(_CotlabFields, DistillationConfig):
    """On-policy distillation: TRL's DistillationConfig with cotlab's fields.  The student (`model`,
    plus `adapter` merged, trained through a LoRA) samples completions of the prompts; the frozen
    teacher scores every token of them; the loss is TRL's generalised Jensen-Shannon divergence
    between the two next-token distributions (`beta` 1.0, TRL's default: the reverse KL of *On-Policy
    Distillation of Language Models: Learning from Self-Generated Mistakes*).

    `teacher` names the teacher the way `model` names the student (embedded, tiny-random, a folder
    or a hub id; the same vocabulary as the student) and `teacher_adapter` an adapter merged into
    it.  TRL's own `teacher_model_name_or_path` (read only by TRL's script) is taken as `teacher`
    when that is unset.  As for GRPO, `dataset` may be a task spec: `n_prompts` of its train split.
    The schedule defaults are SFTRecipe's, so an SFT run and a distillation run can share a budget.
    TRL 1.16's stable trainer is wholly on-policy (GKD's `lmbda` = 1, kept in trl.experimental.gkd):
    every batch is the student's own samples.
    """

    teacher: str | None = field(default=None, metadata={"help": "the teacher: embedded, tiny-random, a folder or a hub id"})
    teacher_adapter: str | None = field(default=None, metadata={"help": "an adapter merged into the teacher (e.g. this run's SFT)"})
    n_prompts: int = 256
    output_dir: str | None = "outputs/onpolicy"
    learning_rate: float = 2e-4
    max_steps: int = 20
    per_device_train_batch_size: int = 8  # prompts a step: one sampled completion each
    max_completion_length: int | None = 96
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = 0.05
    logging_steps: float = 1

    def __post_init__(self):
        if self.teacher_model_name_or_path and self.teacher and self.teacher_model_name_or_path != self.teacher:
            raise CotlabError(f"teacher ({self.teacher}) and TRL's teacher_model_name_or_path ({self.teacher_model_name_or_path}) "
                              "name different teachers: set teacher only")
        self.teacher = self.teacher or self.teacher_model_name_or_path
        check_completion_length(self)
        super().__post_init__()


def check_completion_length(recipe) -> None:
    if recipe.max_completion_length is not None and recipe.max_completion_length < 16:
        raise CotlabError(f"max_completion_length {recipe.max_completion_length} is too short for any chain of thought")


def launched_world_size() -> int:
    """The number of processes this run was launched with (torchrun and `accelerate launch` export
    WORLD_SIZE to every process); read before TRL sets up the distributed state."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_generation_batch(recipe, world_size: int) -> None:
    """TRL's GRPOConfig rule, checked up front with a one-line error: one generation batch is
    per_device_train_batch_size x processes x steps_per_generation completions (the GLOBAL batch;
    steps_per_generation defaults to gradient_accumulation_steps, or follows from
    generation_batch_size), and it must hold whole groups of num_generations completions."""
    global_batch = recipe.per_device_train_batch_size * world_size
    if recipe.generation_batch_size is not None:
        if recipe.generation_batch_size % global_batch:
            raise CotlabError(f"generation_batch_size ({recipe.generation_batch_size}) must be a multiple of the global batch "
                              f"per_device_train_batch_size x {world_size} process(es) ({global_batch})")
        generation_batch, how = recipe.generation_batch_size, "generation_batch_size"
    else:
        steps = recipe.steps_per_generation or recipe.gradient_accumulation_steps
        generation_batch = global_batch * steps
        how = (f"per_device_train_batch_size {recipe.per_device_train_batch_size} x {world_size} process(es) x "
               f"{'steps_per_generation' if recipe.steps_per_generation else 'gradient_accumulation_steps'} {steps}")
    if generation_batch % recipe.num_generations:
        raise CotlabError(f"the generation batch ({how} = {generation_batch} completions) must be a multiple of "
                          f"num_generations ({recipe.num_generations}): GRPO needs whole groups")


def check_vllm_layout(recipe, world_size: int) -> None:
    """Colocated vLLM splits the training processes into tensor-parallel groups of
    vllm_tensor_parallel_size GPUs, so that size must divide the process count (TRL checks it only
    once every process has loaded its model)."""
    if recipe.vllm_mode == "colocate" and world_size % recipe.vllm_tensor_parallel_size:
        raise CotlabError(f"vllm_tensor_parallel_size ({recipe.vllm_tensor_parallel_size}) must divide the number of "
                          f"processes ({world_size}): colocated vLLM shards across groups of that many GPUs")


RECIPES = {"sft": SFTRecipe, "dpo": DPORecipe, "grpo": GRPORecipe, "onpolicy": DistillRecipe}


# Which recipe fields matter, and for what: the one place every list of them lives.  Training's
# reuse and resumption (cotlab.training) and the lessons' matched comparisons read these.

# Where and how often a run logs and saves: they may differ between a run and its resumption (or
# its re-run) without changing what is trained, so they are outside its fingerprint.
BOOKKEEPING_FIELDS = frozenset({"output_dir", "logging_dir", "run_name", "report_to", "disable_tqdm", "logging_steps", "save_steps",
                                "save_total_limit", "push_to_hub", "hub_model_id", "eval_every"})
# How long a run trains: recorded beside its fingerprint, not in it, because more steps continue a
# run while fewer steps, or other epochs, train afresh (cotlab.training.afresh_because).
SCHEDULE_FIELDS = ("max_steps", "num_train_epochs")
# What each run of one matched comparison has of its own: where it writes and which seeds it draws.
PER_RUN_FIELDS = ("output_dir", "logging_dir", "run_name", "seed", "data_seed")
# What two stages' updates (SFT, DPO, GRPO) must share to be compared: the same starting weights,
# number of steps, learning rate and adapter rank.
UPDATE_MATCH_FIELDS = ("adapter", "max_steps", "learning_rate", "lora_r")
# The budget fields that still differ between methods when UPDATE_MATCH_FIELDS agree: examples per
# step (per_device_train_batch_size counts rows for SFT, pairs for DPO, completions for GRPO) and
# the KL strength beta (DPO's and GRPO's are different penalties).
METHOD_BUDGET_FIELDS = UPDATE_MATCH_FIELDS + ("per_device_train_batch_size", "gradient_accumulation_steps", "num_generations", "beta")
# What a matched SFT run and on-policy distillation run must share: where they start, what they
# train and how long and fast.  Tokens seen are not among them: the two differ there by design.
DISTILLATION_BUDGET_FIELDS = ("model", "adapter", "dtype", "load_in_4bit", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
                              "learning_rate", "lr_scheduler_type", "warmup_steps", "max_steps", "per_device_train_batch_size",
                              "gradient_accumulation_steps", "optim", "weight_decay", "max_grad_norm", "seed")


def budget_fields(recipe, varying: tuple[str, ...] = ()) -> dict:
    """What a run of a matched comparison must share with the others: every field of its recipe but
    PER_RUN_FIELDS and the `varying` ones the comparison is about."""
    ignored = set(varying) | set(PER_RUN_FIELDS)
    return {key: value for key, value in recipe.to_dict().items() if key not in ignored}


def recipe_fields(stage: str) -> list[str]:
    return sorted(f.name for f in dataclasses.fields(RECIPES[stage]) if f.init)


def check_fields(stage: str, values: dict, where: str = "") -> None:
    """Every key of `values` is a field of `stage`'s recipe, or a one-line error naming the
    closest one (cotlab's own fields first: `lora_rank` means lora_r, not TRL's local_rank)."""
    known = recipe_fields(stage)
    for key in values:
        if key not in known:
            ours = [f.name for f in dataclasses.fields(_CotlabFields)] + [f.name for f in dataclasses.fields(RECIPES[stage])
                                                                           if f.name in vars(RECIPES[stage]).get("__annotations__", {})]
            prefixed = sorted((name for name in known if name.startswith(key) or key.startswith(name)), key=lambda n: abs(len(n) - len(key)))
            close = prefixed[:1] or difflib.get_close_matches(key, ours, n=1) or difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (cotlab train {stage} --list-fields lists them)"
            raise CotlabError(f"{where}unknown {stage} recipe field '{key}'{hint}")


def fields_of(stage: str, values: dict) -> dict:
    """The entries of `values` that are fields of `stage`'s recipe: another stage's recipe dict
    reused where the two share a budget (lesson 11's SFT twin of an on-policy run drops the
    teacher, beta, temperature and completion length, which SFT has no use for)."""
    known = set(recipe_fields(stage))
    return {key: value for key, value in values.items() if key in known}


def load_recipe(stage: str, config: str | Path | None = None, overrides: list[str] | None = None):
    """A recipe from a YAML file plus `key=value` overrides (values read as YAML).  Every field of
    TRL's config is accepted; a misspelt one is an error naming the closest valid field."""
    import yaml

    if stage not in RECIPES:
        raise CotlabError(f"unknown stage '{stage}': choose one of {', '.join(RECIPES)}")
    values = {}
    if config:
        path = Path(config)
        if not path.is_file():
            raise CotlabError(f"recipe file not found: {config}")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise CotlabError(f"{config} is not valid YAML: {' '.join(str(e).split())}") from None
        if not isinstance(values, dict):
            raise CotlabError(f"{config} must hold a mapping of recipe fields, not {type(values).__name__}")
    for pair in overrides or []:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise CotlabError(f"bad override '{pair}': expected key=value")
        try:
            values[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise CotlabError(f"bad override '{pair}': its value is not valid YAML (quote a string with spaces or colons)") from None
    check_fields(stage, values)
    try:
        return RECIPES[stage](**values)
    except TypeError as e:
        raise CotlabError(f"bad {stage} recipe: {e}") from None


def changed_fields(recipe) -> dict:
    """The recipe's fields whose value differs from a default recipe of the same stage (what the
    model card shows; recipe.json beside the adapter keeps every field)."""
    defaults = type(recipe)().to_dict()
    return {key: value for key, value in recipe.to_dict().items() if defaults.get(key) != value}


def lora_config(recipe):
    """peft's LoraConfig for a recipe, or None for full fine-tuning (lora_r 0)."""
    if recipe.lora_r == 0:
        return None
    from peft import LoraConfig

    return LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                      target_modules=recipe.lora_target_modules, task_type="CAUSAL_LM")
