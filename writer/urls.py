from __future__ import annotations

from django.urls import path

from writer import bible_views, quota_views, version_views, views
from writer.export_views import copy_export, story_export
from writer.live_views import option_swipe_live, request_live
from writer.passage_views import (
    passage_accept,
    passage_chapter,
    passage_detail,
    passage_discard,
    passage_option,
    passage_status,
)
from writer.preference_views import option_prefer, option_rate, preferences_download, request_ratings

app_name = "writer"

urlpatterns = [
    path("", views.home, name="home"),
    path("signup/", views.signup, name="signup"),
    path("stories/new/", views.story_create, name="story_create"),
    path("stories/import/", views.book_import, name="book_import"),
    path("s/<slug:slug>/", views.story_detail, name="story_detail"),
    path("s/<slug:slug>/edit/", views.story_edit, name="story_edit"),
    path("s/<slug:slug>/publish/", views.story_publish, name="story_publish"),
    path("s/<slug:slug>/generate/", views.generate, name="generate"),
    path("s/<slug:slug>/personalise/", views.personalise, name="personalise"),
    path("s/<slug:slug>/export/<str:fmt>/", story_export, name="story_export"),
    path("s/<slug:slug>/my-copy/<str:fmt>/", copy_export, name="copy_export"),
    path("s/<slug:slug>/bible/", bible_views.bible_page, name="bible"),
    path("s/<slug:slug>/bible/new/", bible_views.bible_entry_add, name="bible_entry_add"),
    path("s/<slug:slug>/bible/propose/", bible_views.bible_propose, name="bible_propose"),
    path("s/<slug:slug>/bible/proposals/", bible_views.bible_proposals_status, name="bible_proposals_status"),
    path("s/<slug:slug>/bible/<int:pk>/edit/", bible_views.bible_entry_edit, name="bible_entry_edit"),
    path("s/<slug:slug>/bible/<int:pk>/delete/", bible_views.bible_entry_delete, name="bible_entry_delete"),
    path("s/<slug:slug>/bible/<int:pk>/accept/", bible_views.bible_entry_accept, name="bible_entry_accept"),
    path("s/<slug:slug>/bible/<int:pk>/reject/", bible_views.bible_entry_reject, name="bible_entry_reject"),
    path("s/<slug:slug>/chapters/new/", views.chapter_add, name="chapter_add"),
    path("s/<slug:slug>/chapters/<int:number>/", views.chapter_detail, name="chapter_detail"),
    path("s/<slug:slug>/chapters/<int:number>/edit/", views.chapter_edit, name="chapter_edit"),
    path("s/<slug:slug>/chapters/<int:number>/move/", views.chapter_move, name="chapter_move"),
    path("s/<slug:slug>/chapters/<int:number>/delete/", views.chapter_delete, name="chapter_delete"),
    path("requests/<int:pk>/", views.request_detail, name="request_detail"),
    path("requests/<int:pk>/progress/", views.request_progress, name="request_progress"),
    path("requests/<int:pk>/live/", request_live, name="request_live"),  # the page's poller (writer.live)
    path("requests/<int:pk>/retry/", views.request_retry, name="request_retry"),
    path("options/<int:pk>/accept/", views.option_accept, name="option_accept"),
]

# Readers' ratings and choices of their personalised chapters (writer.preferences).
urlpatterns += [
    path("requests/<int:pk>/ratings/", request_ratings, name="request_ratings"),
    path("options/<int:pk>/rate/", option_rate, name="option_rate"),
    path("options/<int:pk>/prefer/", option_prefer, name="option_prefer"),
    path("preferences/dataset.jsonl", preferences_download, name="preferences_download"),
]

# Passage tools: rewrite, expand, shorten or describe a passage of an option or a chapter (writer.passages).
urlpatterns += [
    path("options/<int:pk>/passage/", passage_option, name="passage_option"),
    path("s/<slug:slug>/chapters/<int:number>/passage/", passage_chapter, name="passage_chapter"),
    path("passages/<int:pk>/", passage_detail, name="passage_detail"),
    path("passages/<int:pk>/status/", passage_status, name="passage_status"),
    path("passages/<int:pk>/accept/", passage_accept, name="passage_accept"),
    path("passages/<int:pk>/discard/", passage_discard, name="passage_discard"),
]

# Versions of options and chapters, swipes (an option written again) and branches (writer.versions,
# writer.swipes, writer.branches).
urlpatterns += [
    path("options/<int:pk>/versions/", version_views.option_versions, name="option_versions"),
    path("options/<int:pk>/versions/compare/", version_views.option_version_compare, name="option_version_compare"),
    path(
        "options/<int:pk>/versions/<int:number>/restore/",
        version_views.option_version_restore,
        name="option_version_restore",
    ),
    path("options/<int:pk>/swipe/", version_views.option_swipe, name="option_swipe"),
    path("options/<int:pk>/swipe/status/", version_views.option_swipe_status, name="option_swipe_status"),
    # The swipe control's poller: the swipe's text as it is written (writer.live).
    path("options/<int:pk>/swipe/live/", option_swipe_live, name="option_swipe_live"),
    path("s/<slug:slug>/chapters/<int:number>/versions/", version_views.chapter_versions, name="chapter_versions"),
    path(
        "s/<slug:slug>/chapters/<int:number>/versions/compare/",
        version_views.chapter_version_compare,
        name="chapter_version_compare",
    ),
    path(
        "s/<slug:slug>/chapters/<int:number>/versions/<int:version>/restore/",
        version_views.chapter_version_restore,
        name="chapter_version_restore",
    ),
    path("s/<slug:slug>/chapters/<int:number>/branch/", version_views.chapter_branch, name="chapter_branch"),
]

# Staff: generation quotas, the heaviest users of the last day and their own limits (writer.quotas).
urlpatterns += [
    path("staff/quotas/", quota_views.quota_list, name="quota_list"),
    path("staff/quotas/set/", quota_views.quota_set, name="quota_set"),
]
