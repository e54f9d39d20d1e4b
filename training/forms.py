from __future__ import annotations

from django import forms


class TrainingJobForm(forms.Form):
    name = forms.CharField(max_length=120, required=False)
    dataset_dir = forms.CharField(max_length=500, help_text="A folder with train.jsonl, made by build_dataset.")
    out_dir = forms.CharField(max_length=500, help_text="Checkpoints and the adapter go here.")
    max_steps = forms.IntegerField(min_value=1, initial=50)
    num_generations = forms.IntegerField(min_value=2, initial=4)
    max_completion_length = forms.IntegerField(min_value=8, initial=64)
    lora_rank = forms.IntegerField(min_value=1, initial=16)
    gradient_accumulation_steps = forms.IntegerField(min_value=1, initial=1)
    rewards = forms.CharField(
        max_length=300, initial="format_partial,rouge1,bleu", help_text="Comma-separated reward names."
    )
