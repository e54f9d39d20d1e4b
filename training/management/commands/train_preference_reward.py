"""python manage.py train_preference_reward --data FILE.jsonl --out DIR: the human preference reward's scorer."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from mesu_web.errors import ApplicationError
from training.preference_reward import PreferenceRewardConfig, config_help, train_file


class Command(BaseCommand):
    help = (
        "Train the human_preference reward (a Bradley-Terry scorer on frozen MiniLM embeddings) from the pairs "
        "export_preferences writes, on the CPU. Writes DIR/weights.safetensors and DIR/card.json; prints JSON: "
        "pairs, train_pairs, heldout_pairs, heldout_accuracy (pairs of held-out requests ranked right), out, "
        "skipped (malformed lines by reason), seconds. Use it with train_grpo --rewards ...,human_preference "
        "--preference-model DIR."
    )

    def add_arguments(self, parser) -> None:
        helps = config_help()
        parser.add_argument(
            "--data", required=True, help="The preference JSONL file (from export_preferences)."
        )
        parser.add_argument(
            "--out", required=True, help="The model folder to write (replaced if it holds one)."
        )
        parser.add_argument("--epochs", type=int, default=None, help=helps["epochs"])
        parser.add_argument("--seed", type=int, default=None, help=helps["seed"])

    def handle(self, *args, **options) -> None:
        import torch

        torch.set_num_threads(1)  # tiny scorer; MiniLM on one thread (two were slower on the 2-core box)
        values = {k: options[k] for k in ("epochs", "seed") if options.get(k) is not None}
        try:
            config = PreferenceRewardConfig(**values)
            result = train_file(Path(options["data"]), out_dir=Path(options["out"]), config=config)
        except ApplicationError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(json.dumps(result.to_dict()))
