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
    embedding_model = models.CharField(
        max_length=160, blank=True, help_text="The embedder that made the vector."
    )
    embedded_text_hash = models.CharField(max_length=64, blank=True)
    embedding_error = models.TextField(
        blank=True, help_text="Why the last embedding failed; empty when it worked."
    )

    class Meta:
        abstract = True


class RiskTier(models.TextChoices):
    """GARM-style risk tiers of a story, lowest first. `floor` is never sold to any brand."""

    LOW = "low", "Low risk"
    MEDIUM = "medium", "Medium risk"
    HIGH = "high", "High risk"
    FLOOR = "floor", "Floor (never monetised)"


class AgeBracket(models.TextChoices):
    UNKNOWN = "", "Not said"
    UNDER_18 = "under_18", "Under 18"
    ADULT = "adult", "18 or older"


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

    class Approval(models.TextChoices):
        PENDING = "pending", "Waiting for staff approval"
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"

    # A new brand waits for staff (brands/approval.py): until approved it is never matched or placed.
    approval = models.CharField(max_length=10, choices=Approval.choices, default=Approval.PENDING)
    approval_note = models.TextField(blank=True, help_text="Staff's reason, shown to the brand's managers.")
    approval_decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approval_decided_at = models.DateTimeField(null=True, blank=True)

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
    """A reader's switch for sponsored chapters, and the age they gave at sign-up. Without a row: enabled,
    age not said."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sponsorship_preference"
    )
    sponsored_chapters_enabled = models.BooleanField(default=True)
    # No placement ever reaches a reader who said they are under 18 (issue 17).
    age_bracket = models.CharField(
        max_length=8, choices=AgeBracket.choices, blank=True, default=AgeBracket.UNKNOWN
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        state = "on" if self.sponsored_chapters_enabled else "off"
        return f"Sponsored chapters {state} for {self.user}"


class PlacementDecision(models.Model):
    """The audit log of the review queue: who decided what about which placement, when, and why."""

    class Action(models.TextChoices):
        APPROVED = "approved", "Approved"
        APPROVED_WITH_EDIT = "approved_edit", "Approved with an edit of the placed passage"
        AUTO_APPROVED = "auto", "Approved by an auto-approve rule"
        CHANGES_REQUESTED = "changes", "Changes requested"
        REJECTED = "rejected", "Rejected"

    option = models.ForeignKey("writer.GenerationOption", on_delete=models.CASCADE, related_name="decisions")
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="decisions")
    # Empty for an auto-approve rule's decision (`rule` says which).
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="placement_decisions",
    )
    rule = models.ForeignKey(
        "AutoApproveRule", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=16, choices=Action.choices)
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
    """A viewable impression: a reader had the placed passage at least half on screen for a second (posted by
    the page's IntersectionObserver, never written on a plain GET). One row per reader and chapter."""

    option = models.ForeignKey("writer.GenerationOption", on_delete=models.CASCADE, related_name="views")
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="views")
    campaign = models.ForeignKey(
        "Campaign", null=True, blank=True, on_delete=models.SET_NULL, related_name="views"
    )
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["option", "user"], name="placement_view_once_per_reader")
        ]
        indexes = [models.Index(fields=["brand", "created_at"])]

    def __str__(self) -> str:
        return f"{self.user} saw option {self.option_id}"


# --- Issue 17: brands as a business -----------------------------------------------------------------
# Money is a Decimal in the brand's currency with 4 places (a CPM view costs a fraction of a cent).
MONEY = {"max_digits": 14, "decimal_places": 4}


class Campaign(models.Model):
    """A brand's campaign: which assets are in play, when, for how much, at what price."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        PAUSED = "paused", "Paused"
        ACTIVE = "active", "Active"
        ENDED = "ended", "Ended"

    class Pricing(models.TextChoices):
        CPM = "cpm", "CPM on viewable reader impressions"
        FIXED = "fixed", "Fixed price per approved placement"

    class Pacing(models.TextChoices):
        EVEN = "even", "Even: spread the budget over the flight"
        ASAP = "asap", "As fast as possible"

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="campaigns")
    name = models.CharField(max_length=120)
    objective = models.CharField(
        max_length=200, blank=True, help_text="What the campaign is for, in plain words."
    )
    assets = models.ManyToManyField(BrandAsset, related_name="campaigns", blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.DRAFT)
    starts_on = models.DateField()
    ends_on = models.DateField()
    budget_total = models.DecimalField(**MONEY)
    budget_daily = models.DecimalField(**MONEY, null=True, blank=True, help_text="Empty: no daily limit.")
    pricing = models.CharField(max_length=8, choices=Pricing.choices, default=Pricing.CPM)
    price = models.DecimalField(
        **MONEY, help_text="Per 1,000 viewable impressions (CPM) or per approved placement."
    )
    pacing = models.CharField(max_length=8, choices=Pacing.choices, default=Pacing.EVEN)
    # Spent so far: changed only with the row locked, together with a CampaignSpend row.
    spent = models.DecimalField(**MONEY, default=0)
    # Frequency caps (empty: none): placements of this campaign's brand one reader sees a day, and approved
    # placements of the brand in one story.
    cap_per_reader_per_day = models.PositiveSmallIntegerField(null=True, blank=True)
    cap_per_story = models.PositiveSmallIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["brand", "-starts_on", "name"]
        constraints = [
            models.UniqueConstraint(Lower("name"), "brand", name="campaign_unique_name"),
            models.CheckConstraint(
                condition=Q(ends_on__gte=models.F("starts_on")), name="campaign_dates_ordered"
            ),
            models.CheckConstraint(condition=Q(budget_total__gt=0), name="campaign_budget_positive"),
            models.CheckConstraint(
                condition=Q(budget_daily__isnull=True)
                | (Q(budget_daily__gt=0) & Q(budget_daily__lte=models.F("budget_total"))),
                name="campaign_daily_budget_in_range",
            ),
            models.CheckConstraint(condition=Q(price__gt=0), name="campaign_price_positive"),
            # The last line against overspend: the database refuses it even if the code did not.
            models.CheckConstraint(
                condition=Q(spent__gte=0) & Q(spent__lte=models.F("budget_total")),
                name="campaign_spent_within_budget",
            ),
        ]
        indexes = [models.Index(fields=["status", "starts_on", "ends_on"])]

    def __str__(self) -> str:
        return f"{self.brand.name}: {self.name}"


class CampaignSpend(models.Model):
    """One billable event, charged once: a viewable impression (CPM) or an approved placement (fixed)."""

    class Kind(models.TextChoices):
        IMPRESSION = "impression", "Viewable impression"
        PLACEMENT = "placement", "Approved placement"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="spends")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    option = models.ForeignKey("writer.GenerationOption", on_delete=models.CASCADE, related_name="spends")
    # The reader of an impression; empty for a placement.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    amount = models.DecimalField(**MONEY)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "option", "user"],
                condition=Q(kind="impression"),
                name="spend_impression_once",
            ),
            models.UniqueConstraint(
                fields=["campaign", "option"], condition=Q(kind="placement"), name="spend_placement_once"
            ),
            models.CheckConstraint(condition=Q(amount__gte=0), name="spend_amount_not_negative"),
        ]
        indexes = [models.Index(fields=["campaign", "created_at"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} of option {self.option_id}: {self.amount}"


class BrandSuitability(models.Model):
    """What a brand accepts: IAB content categories (empty: any), the highest risk tier, and the sensitive
    topics it opts in to. The floor tier is never accepted. Without a row: low tier, no sensitive topics."""

    brand = models.OneToOneField(Brand, on_delete=models.CASCADE, related_name="suitability")
    # The brand's own IAB category (its product's): two brands of one category never share a chapter.
    category = models.CharField(max_length=16, blank=True)
    accepted_categories = ArrayField(models.CharField(max_length=16), default=list, blank=True)
    max_risk_tier = models.CharField(
        max_length=8, choices=[c for c in RiskTier.choices if c[0] != RiskTier.FLOOR], default=RiskTier.LOW
    )
    allow_health = models.BooleanField(default=False)
    allow_politics = models.BooleanField(default=False)
    # Review: placements waiting longer than this are flagged in the queue.
    review_sla_days = models.PositiveSmallIntegerField(default=3)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "brand suitability"

    def __str__(self) -> str:
        return f"Suitability of {self.brand}"


class StorySuitability(models.Model):
    """A story's IAB content categories and risk tier, classified from its metadata and chapters, and
    reviewable by its author (`source` "author": the author's word stands until they change it)."""

    class Source(models.TextChoices):
        CLASSIFIED = "classified", "Classified from the story"
        AUTHOR = "author", "Set by the author"

    story = models.OneToOneField("writer.Story", on_delete=models.CASCADE, related_name="suitability")
    categories = ArrayField(models.CharField(max_length=16), default=list, blank=True)
    risk_tier = models.CharField(max_length=8, choices=RiskTier.choices, default=RiskTier.MEDIUM)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.CLASSIFIED)
    evidence = models.JSONField(
        default=dict, blank=True, help_text="What the classification found, for the author."
    )
    text_hash = models.CharField(max_length=64, blank=True, help_text="What was classified.")
    classified_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "story suitability"
        indexes = [models.Index(fields=["risk_tier"])]

    def __str__(self) -> str:
        return f"Suitability of {self.story}"


class AutoApproveRule(models.Model):
    """A brand's rule to approve a placement without a person: at most this risk tier, at least this
    similarity to the chapter written without the brand, and no policy finding."""

    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="auto_approve_rules")
    max_risk_tier = models.CharField(
        max_length=8, choices=[c for c in RiskTier.choices if c[0] != RiskTier.FLOOR], default=RiskTier.LOW
    )
    min_similarity = models.FloatField(
        default=0.95, help_text="ROUGE-L of the placed chapter against its draft."
    )
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(min_similarity__gte=0) & Q(min_similarity__lte=1),
                name="auto_rule_similarity_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.brand}: auto-approve up to {self.max_risk_tier}, similarity >= {self.min_similarity}"


class DisclosureOpen(models.Model):
    """A reader opened the "Why am I seeing this?" panel of a sponsored chapter."""

    option = models.ForeignKey(
        "writer.GenerationOption", on_delete=models.CASCADE, related_name="disclosure_opens"
    )
    brand = models.ForeignKey(Brand, on_delete=models.CASCADE, related_name="disclosure_opens")
    campaign = models.ForeignKey(Campaign, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["brand", "created_at"])]

    def __str__(self) -> str:
        return f"{self.user} opened the disclosure of option {self.option_id}"


class Partner(models.Model):
    """A partner app (e.g. a retail app) that reaches stories through the API on behalf of its brands."""

    name = models.CharField(max_length=120, unique=True)
    brands = models.ManyToManyField(Brand, related_name="partners", blank=True)
    contact = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class PartnerToken(models.Model):
    """An API token: shown once, kept as its sha256; scopes limit what it may call."""

    SCOPES = (
        ("stories:read", "List stories open to placements"),
        ("requests:write", "Request a branded next chapter"),
        ("requests:read", "Read its requests and their options"),
        ("reports:read", "Read placement reports"),
    )

    partner = models.ForeignKey(Partner, on_delete=models.CASCADE, related_name="tokens")
    name = models.CharField(max_length=80)
    prefix = models.CharField(
        max_length=12, unique=True, help_text="The token's first characters, to tell tokens apart."
    )
    key_hash = models.CharField(max_length=64, unique=True)
    scopes = ArrayField(models.CharField(max_length=32), default=list)
    rate_per_minute = models.PositiveIntegerField(default=60)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.partner.name}: {self.name} ({self.prefix}…)"


class ApiAuditEntry(models.Model):
    """Every API call: who (token), what (method, path), the answer's status, when and from where."""

    token = models.ForeignKey(
        PartnerToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit"
    )
    partner = models.ForeignKey(
        Partner, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit"
    )
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=300)
    status = models.PositiveSmallIntegerField()
    ip = models.GenericIPAddressField(null=True, blank=True)
    detail = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["partner", "created_at"])]

    def __str__(self) -> str:
        return f"{self.method} {self.path} {self.status}"
