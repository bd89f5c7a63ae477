from django.urls import path

from deadletters import views

urlpatterns = [
    path("", views.dead_letters, name="dead-letters"),
    path("redrive/", views.redrive_view, name="dead-letters-redrive"),
]
