from __future__ import annotations

import dataclasses

from django import forms

from mesu_web.errors import ApplicationError
from training.config import GRPOJobConfig, SFTJobConfig
from training.paths import data_folder


def _data_folder(value: str, what: str) -> str:
    try:
        return data_folder(value, what=what)
    except ApplicationError as exc:
        raise forms.ValidationError(exc.message) from None

_CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(GRPOJobConfig)}  # defaults and help texts
_SFT_FIELDS = {f.name: f for f in dataclasses.fields(SFTJobConfig)}
_SFT_HELP = SFTJobConfig.help_texts()

KIND_GRPO, KIND_SFT, KIND_SFT_GRPO = "grpo", "sft", "sft_grpo"
KINDS = [
    (KIND_GRPO, "GRPO"),
    (KIND_SFT, "SFT (supervised warm start on the distilled rows)"),
    (KIND_SFT_GRPO, "SFT then GRPO (GRPO starts from the SFT adapter)"),
]


def _sft_initial(name: str):
    return _SFT_FIELDS[name].default


class TrainingJobForm(forms.Form):
    """One form for the three kinds of run. The GRPO fields matter for GRPO and SFT then GRPO, the SFT
    fields for SFT and SFT then GRPO (`clean` requires only the fields of the chosen kind); the LoRA
    shape is shared, as the GRPO stage continues the SFT stage's LoRA. The job configs validate the
    values (GRPOJobConfig.from_form, SFTJobConfig.from_form); `add_application_error` shows what they
    refuse beside the field."""

    kind = forms.ChoiceField(
        choices=KINDS, required=False, initial=KIND_GRPO, widget=forms.RadioSelect, label="What to run"
    )  # left out: GRPO (as before there was a choice)
    name = forms.CharField(max_length=120, required=False)
    dataset_dir = forms.CharField(
        max_length=500,
        help_text="A folder with train.jsonl, made by build_dataset. SFT trains on the distilled rows: the "
        "folder's own when it has rows with a reasoning, else its distilled/ folder (manage.py distill).",
    )
    out_dir = forms.CharField(
        max_length=500, help_text="Checkpoints and the adapter go here (SFT then GRPO: into sft/ and grpo/)."
    )
    lora_rank = forms.IntegerField(
        min_value=1, initial=16, label="LoRA rank", help_text="LoRA rank r (SFT then GRPO: both stages)."
    )
    lora_alpha = forms.IntegerField(
        min_value=1, required=False, label="LoRA alpha",
        help_text="LoRA alpha; empty: alpha = rank (SFT then GRPO: both stages).",
    )  # fmt: skip
    # GRPO (and stage 2)
    max_steps = forms.IntegerField(min_value=1, max_value=1_000_000, initial=50, required=False)  # the row's column is an int4
    num_generations = forms.IntegerField(min_value=2, initial=4, required=False)
    max_completion_length = forms.IntegerField(min_value=8, initial=64, required=False)
    gradient_accumulation_steps = forms.IntegerField(min_value=1, initial=1, required=False)
    # Optional: left empty, the job config's default. GRPOJobConfig checks the values (lr > 0, warmup
    # in [0, 1)); `add_application_error` puts what it rejects beside the field.
    learning_rate = forms.FloatField(
        required=False,
        initial=_CONFIG_FIELDS["learning_rate"].default,
        help_text=GRPOJobConfig.help_texts()["learning_rate"],
    )
    warmup_ratio = forms.FloatField(
        required=False,
        initial=_CONFIG_FIELDS["warmup_ratio"].default,
        help_text=GRPOJobConfig.help_texts()["warmup_ratio"],
    )
    rewards = forms.CharField(
        max_length=300, initial="format_partial,rouge1,bleu", help_text="Comma-separated reward names.", required=False
    )
    # SFT (and stage 1): each optional, left empty the SFTJobConfig default.
    sft_epochs = forms.FloatField(
        required=False, max_value=1000, initial=_sft_initial("num_train_epochs"), label="SFT epochs",
        help_text=_SFT_HELP["num_train_epochs"],
    )  # fmt: skip
    sft_max_steps = forms.IntegerField(
        required=False, min_value=1, max_value=1_000_000, label="SFT max steps",
        help_text="Optimizer steps at most (empty: the epochs decide).",
    )  # fmt: skip
    sft_learning_rate = forms.FloatField(
        required=False, initial=_sft_initial("learning_rate"), label="SFT learning rate", help_text=_SFT_HELP["learning_rate"]
    )
    sft_max_length = forms.IntegerField(
        required=False, max_value=1_000_000, initial=_sft_initial("max_length"), label="SFT max length",
        help_text=_SFT_HELP["max_length"],
    )  # fmt: skip
    sft_max_answer_tokens = forms.IntegerField(
        required=False, max_value=1_000_000, initial=_sft_initial("max_answer_tokens"), label="SFT max answer tokens",
        help_text=_SFT_HELP["max_answer_tokens"],
    )  # fmt: skip
    sft_max_reasoning_tokens = forms.IntegerField(
        required=False, max_value=1_000_000, initial=_sft_initial("max_reasoning_tokens"),
        label="SFT max reasoning tokens", help_text=_SFT_HELP["max_reasoning_tokens"],
    )  # fmt: skip

    COMMON_FIELDS = ("kind", "name", "dataset_dir", "out_dir", "lora_rank", "lora_alpha")
    GRPO_FIELDS = (
        "max_steps", "num_generations", "max_completion_length", "gradient_accumulation_steps", "learning_rate",
        "warmup_ratio", "rewards",
    )  # fmt: skip
    GRPO_REQUIRED = ("max_steps", "num_generations", "max_completion_length", "gradient_accumulation_steps", "rewards")
    SFT_FIELDS = (
        "sft_epochs", "sft_max_steps", "sft_learning_rate", "sft_max_length", "sft_max_answer_tokens",
        "sft_max_reasoning_tokens",
    )  # fmt: skip

    def clean_dataset_dir(self) -> str:
        return _data_folder(self.cleaned_data["dataset_dir"], "dataset folder")

    def clean_out_dir(self) -> str:
        return _data_folder(self.cleaned_data["out_dir"], "output folder")

    def clean_kind(self) -> str:
        return self.cleaned_data.get("kind") or KIND_GRPO

    def clean(self) -> dict:
        data = super().clean()
        if data.get("kind") in (KIND_GRPO, KIND_SFT_GRPO):
            for name in self.GRPO_REQUIRED:
                if name not in self.errors and data.get(name) in (None, ""):
                    self.add_error(name, forms.Field.default_error_messages["required"])
        return data

    @property
    def wants_sft(self) -> bool:
        return self.cleaned_data.get("kind") in (KIND_SFT, KIND_SFT_GRPO)

    @property
    def wants_grpo(self) -> bool:
        return self.cleaned_data.get("kind") in (KIND_GRPO, KIND_SFT_GRPO)

    def groups(self) -> list[tuple[str, str, list]]:
        """(legend, css name, bound fields) for the template's fieldsets."""
        return [
            ("The run", "common", [self[name] for name in self.COMMON_FIELDS]),
            ("GRPO (GRPO, and stage 2 of SFT then GRPO)", "grpo", [self[name] for name in self.GRPO_FIELDS]),
            ("SFT (SFT, and stage 1 of SFT then GRPO)", "sft", [self[name] for name in self.SFT_FIELDS]),
        ]

    def add_application_error(self, exc: ApplicationError, *, sft: bool = False) -> None:
        """Show a refused job on the form: each of the config's problems beside the field it names
        (its messages start with the field's name, e.g. "learning_rate must be > 0"; `sft`: an
        SFTJobConfig's, whose fields map back through SFTJobConfig.FORM_FIELDS), or beside the field
        the error's extra "field" names; the rest above."""
        to_form = {config_name: form_name for form_name, config_name in SFTJobConfig.FORM_FIELDS.items()}
        problems = exc.extra.get("errors") or [exc.message]
        for problem in problems:
            name = str(problem).split(" ", 1)[0]
            if sft:
                name = to_form.get(name, "")
            if len(problems) == 1 and exc.extra.get("field") in self.fields:
                name = exc.extra["field"]
            self.add_error(name if name in self.fields else None, problem)


class AdapterRegisterForm(forms.Form):
    name = forms.CharField(max_length=64, help_text="The served name: letters, digits, '.', '_' or '-'.")
    path = forms.CharField(
        max_length=500, help_text="A LoRA folder in the project's data folders (adapter_config.json ...)."
    )

    def clean_path(self) -> str:
        return _data_folder(self.cleaned_data["path"], "adapter folder")


class EvaluationForm(forms.Form):
    target = forms.ChoiceField(help_text="The base model or a registered adapter.")
    dataset_dir = forms.CharField(
        max_length=500, help_text="A folder with test.jsonl, made by build_dataset."
    )
    limit = forms.IntegerField(  # at most an int4, the row's column
        min_value=1, max_value=1_000_000, required=False, initial=10, help_text="Pairs to score (empty: all)."
    )
    max_new_tokens = forms.IntegerField(min_value=8, initial=256)
    rewards = forms.CharField(
        max_length=300,
        initial="format_exact,format_partial,bleu,rouge1,rouge2,rougeL,meteor,embedding_cosine",
        help_text="Comma-separated reward names.",
    )

    def __init__(self, *args, targets: list[tuple[str, str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["target"].choices = targets

    def clean_dataset_dir(self) -> str:
        return _data_folder(self.cleaned_data["dataset_dir"], "dataset folder")


class BookUploadForm(forms.Form):
    file = forms.FileField(help_text="A .txt, .md or .epub book; chapters are found by their headings.")
    author = forms.CharField(max_length=200, required=False, help_text="Overrides the book's own.")
    version = forms.CharField(max_length=50, required=False)
    overwrite = forms.BooleanField(required=False, help_text="Replace a book of the same title.")


class DatasetForm(forms.Form):
    name = forms.CharField(max_length=64, help_text="A folder name: letters, digits, '.', '_' or '-'.")
    test_fraction = forms.FloatField(min_value=0.05, max_value=0.95, initial=0.3, help_text="Share of books held out.")
    seed = forms.IntegerField(initial=0)


class ExportForm(forms.Form):
    formats = forms.MultipleChoiceField(
        choices=[("lora", "LoRA only"), ("merged16", "Merged 16-bit"), ("merged4", "Merged 4-bit (GPU)"), ("gguf", "GGUF")],
        widget=forms.CheckboxSelectMultiple,
        initial=["lora", "merged16"],
    )
    gguf_types = forms.MultipleChoiceField(
        choices=[("f16", "f16"), ("q8_0", "q8_0"), ("q4_k_m", "q4_k_m")],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        initial=["q8_0"],
    )
