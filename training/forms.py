from __future__ import annotations

import dataclasses

from django import forms

from mesu_web.errors import ApplicationError
from training.config import GRPOJobConfig

_CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(GRPOJobConfig)}  # defaults and help texts


class TrainingJobForm(forms.Form):
    name = forms.CharField(max_length=120, required=False)
    dataset_dir = forms.CharField(
        max_length=500, help_text="A folder with train.jsonl, made by build_dataset."
    )
    out_dir = forms.CharField(max_length=500, help_text="Checkpoints and the adapter go here.")
    max_steps = forms.IntegerField(min_value=1, max_value=1_000_000, initial=50)  # the row's column is an int4
    num_generations = forms.IntegerField(min_value=2, initial=4)
    max_completion_length = forms.IntegerField(min_value=8, initial=64)
    lora_rank = forms.IntegerField(min_value=1, initial=16)
    gradient_accumulation_steps = forms.IntegerField(min_value=1, initial=1)
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
        max_length=300, initial="format_partial,rouge1,bleu", help_text="Comma-separated reward names."
    )

    def add_application_error(self, exc: ApplicationError) -> None:
        """Show a refused job on the form: each of the config's problems beside the field it names
        (its messages start with the field's name, e.g. "learning_rate must be > 0"), the rest above."""
        problems = exc.extra.get("errors") or [exc.message]
        for problem in problems:
            name = str(problem).split(" ", 1)[0]
            self.add_error(name if name in self.fields else None, problem)


class AdapterRegisterForm(forms.Form):
    name = forms.CharField(max_length=64, help_text="The served name: letters, digits, '.', '_' or '-'.")
    path = forms.CharField(
        max_length=500, help_text="A LoRA folder on this machine (adapter_config.json ...)."
    )


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
