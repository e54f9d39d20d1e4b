from __future__ import annotations

from django.urls import path

from writer import bible_views, views
from writer.export_views import copy_export, story_export
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
