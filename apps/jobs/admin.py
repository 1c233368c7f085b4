from django.contrib import admin

from .models import Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "kind", "workspace", "status", "progress", "created_by", "created_at"]
    list_filter = ["status", "kind"]
    search_fields = ["id", "celery_task_id"]
    raw_id_fields = ["created_by"]
    readonly_fields = ["celery_task_id", "attempt", "retries", "heartbeat_at"]
