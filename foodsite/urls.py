from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from deliveries import views as deliveries_views
from foodsite import views as site_views
from observability.metrics import metrics_view
from orders import views as orders_views
from stats import views as stats_views

urlpatterns = [
    path("", orders_views.menu, name="menu"),
    path("orders/<uuid:order_id>/", orders_views.order_detail, name="order-detail"),
    path("orders/<uuid:order_id>/pay/", orders_views.pay, name="order-pay"),
    path("courier/", deliveries_views.courier, name="courier"),
    path("courier/open/", deliveries_views.open_deliveries, name="courier-open"),
    path("courier/<uuid:order_id>/<slug:step>/", deliveries_views.courier_step, name="courier-step"),
    path("stats/", stats_views.dashboard, name="stats"),
    path("stats/dead-letters/", include("deadletters.urls")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("home/", site_views.home, name="home"),
    path("healthz", site_views.healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
]
