from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.http import HttpRequest

from .models import ApiToken, User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ("username", "email", "role", "is_staff", "is_active", "last_login")
    list_filter = ("role", "is_staff", "is_active")
    fieldsets = (*(DjangoUserAdmin.fieldsets or ()), ("Heronry", {"fields": ("role",)}))
    add_fieldsets = (*DjangoUserAdmin.add_fieldsets, ("Heronry", {"fields": ("role",)}))


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Superusers may see and revoke tokens; nobody creates them here (the secret would be lost)."""

    list_display = ("name", "user", "prefix", "project_id", "read_only", "expires_at", "last_used_at", "revoked_at")
    list_filter = ("read_only",)
    search_fields = ("name", "prefix", "user__username")
    readonly_fields = ("user", "name", "prefix", "project_id", "read_only", "expires_at", "last_used_at", "created_at")
    fields = (*readonly_fields, "revoked_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
