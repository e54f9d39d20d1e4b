from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower
from pgvector.django import HnswIndex, VectorField

# The vector column's size. all-MiniLM-L6-v2 gives 384 floats; another embedder must give the same
# size (BRAND_EMBEDDING_DIMENSIONS), or the column needs a migration.
EMBEDDING_DIMENSIONS = 384


def text_hash(text: str) -> str:
    """What an embedding was made from, so a changed text is embedded again (sha256, hex)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddedRow(models.Model):
    """A row with a cached embedding of its text, and what made it (re-embedded when the text changes)."""

    embedding = VectorField(dimensions=EMBEDDING_DIMENSIONS, null=True, blank=True)
    embedding_model = models.CharField(max_length=160, blank=True, help_text="The embedder that made the vector.")
    embedded_text_hash = models.CharField(max_length=64, blank=True)
    embedding_error = models.TextField(blank=True, help_text="Why the last embedding failed; empty when it worked.")

    class Meta:
        abstract = True


class Brand(EmbeddedRow):
    """A brand profile, owned by its managers (one or more); a manager sees only their brands."""

    name = models.CharField(max_length=120, unique=True)
    slug = models.SlugField(max_length=80, unique=True)
    description = models.TextField(blank=True, help_text="What the brand is and sells, in plain words.")
    tone_of_voice = models.TextField(
        blank=True, help_text="How the brand speaks, e.g. playful, calm, never snarky."
    )
    target_audience = models.TextField(blank=True, help_text="Who the brand wants to reach.")
    banned_themes = ArrayField(
        models.CharField(max_length=40),
        default=list,
        blank=True,
        help_text="Lowercase themes and genres the brand must never appear next to (e.g. violence, self-harm).",
    )
    max_placements_per_chapter = models.PositiveSmallIntegerField(default=1)
    managers = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="managed_brands", blank=True)
    is_active = models.BooleanField(default=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(max_placements_per_chapter__gte=1), name="brand_max_placements_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def embedding_text(self) -> str:
        lines = [f"{self.name}: {self.description}".strip().rstrip(":")]
        if self.tone_of_voice:
            lines.append(f"Tone of voice: {self.tone_of_voice}")
        if self.target_audience:
            lines.append(f"Audience: {self.target_audience}")
        return "\n".join(lines)


class BrandAsset(EmbeddedRow):
    """A product, mascot, character or slogan, and the exact terms that name it in text."""

    class Kind(models.TextChoices):
        PRODUCT = "product", "Product"
        MASCOT = "mascot", "Mascot"
        CHARACTER = "character", "Character"
        SLOGAN = "slogan", "Slogan"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="assets")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True, help_text="A short description a writer can work from.")
    terms = ArrayField(
        models.CharField(max_length=80),
        help_text="The exact words that identify the asset in a chapter, e.g. its product name.",
    )

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["brand", "kind", "name"]
        constraints = [
            models.UniqueConstraint(Lower("name"), "brand", name="brand_asset_unique_name"),
            # NOT (terms = '{}'): array_length() of an empty array is NULL, which a CHECK lets through.
            models.CheckConstraint(condition=~Q(terms=[]), name="brand_asset_terms_not_empty"),
        ]
        indexes = [
            # Cosine distance, as matching orders by; m and ef_construction are pgvector's defaults.
            HnswIndex(
                name="brand_asset_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
        ]

    def __str__(self) -> str:
        return f"{self.brand.name}: {self.name}"

    def embedding_text(self) -> str:
        """The asset in its brand's words: the brand's description carries most of the meaning."""
        lines = [f"{self.get_kind_display()}: {self.name}. {self.description}".strip()]
        lines.append(f"Brand: {self.brand.embedding_text()}")
        lines.append(f"Also called: {', '.join(self.terms)}")
        return "\n".join(lines)


class StoryBrandSettings(models.Model):
    """An author's choice about brand placements in one story. Without a row: opted out."""

    story = models.OneToOneField("writer.Story", on_delete=models.CASCADE, related_name="brand_settings")
    opt_in = models.BooleanField(
        default=False, help_text="Brands may be placed in this story's new chapters."
    )
    excluded_brands = models.ManyToManyField(Brand, blank=True, related_name="excluded_by_stories")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "story brand settings"

    def __str__(self) -> str:
        return f"Brand settings of {self.story}"


class ReaderSponsorshipPreference(models.Model):
    """A reader's switch for sponsored chapters. Without a row: enabled."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sponsorship_preference"
    )
    sponsored_chapters_enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        state = "on" if self.sponsored_chapters_enabled else "off"
        return f"Sponsored chapters {state} for {self.user}"


class PlacementDecision(models.Model):
    """The audit log of the review queue: who decided what about which placement, when, and why."""

    class Action(models.TextChoices):
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    option = models.ForeignKey("writer.GenerationOption", on_delete=models.CASCADE, related_name="decisions")
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="decisions")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="placement_decisions")
    action = models.CharField(max_length=10, choices=Action.choices)
    reason = models.TextField(blank=True)
    # sha256 of the option's text as it was decided: an approval covers exactly that text.
    text_hash = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["brand", "created_at"])]

    def __str__(self) -> str:
        return f"{self.reviewer} {self.action} option {self.option_id}"


class PlacementView(models.Model):
    """A reader saw an approved branded chapter: one row per reader and chapter, however often they look."""

    option = models.ForeignKey("writer.GenerationOption", on_delete=models.CASCADE, related_name="views")
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="views")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["option", "user"], name="placement_view_once_per_reader")]
        indexes = [models.Index(fields=["brand", "created_at"])]

    def __str__(self) -> str:
        return f"{self.user} saw option {self.option_id}"
