"""Django admin for API keys: look, search and revoke; the hash is never shown."""

from django.contrib import admin, messages

from apps.workspaces.services import client_ip

from . import services
from .models import ApiKey


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "prefix",
        "name",
        "user",
        "workspace",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["workspace"]
    search_fields = ["prefix", "name", "user__email", "workspace__name", "workspace__slug"]
    list_select_related = ["user", "workspace"]
    exclude = ["key_hash"]
    readonly_fields = [
        "workspace",
        "user",
        "name",
        "prefix",
        "scopes",
        "monthly_cap",
        "expires_at",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    actions = ["revoke_keys"]

    def has_add_permission(self, request):
        return False  # keys are issued on the API keys page or by create_api_key: shown once

    @admin.action(description="Revoke the selected keys (audited)")
    def revoke_keys(self, request, queryset):
        count = 0
        for api_key in queryset.select_related("user", "workspace").filter(revoked_at=None):
            services.api_key_revoke(api_key=api_key, actor=request.user, ip=client_ip(request))
            count += 1
        self.message_user(request, f"{count} key(s) revoked.", messages.SUCCESS)
