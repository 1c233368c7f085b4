"""Small factories for users, workspaces and memberships."""

import itertools

from apps.workspaces.models import Membership, Role, User, Workspace

_seq = itertools.count(1)
PASSWORD = "correct horse battery staple"


def make_user(email: str | None = None, *, password: str = PASSWORD, name: str = "") -> User:
    email = email or f"person{next(_seq)}@example.com"
    return User.objects.create_user(email=email, password=password, name=name)


def make_workspace(name: str = "Acme audio", *, owner: User | None = None) -> Workspace:
    workspace = Workspace.objects.create(name=name, slug=f"ws-{next(_seq)}")
    if owner is not None:
        Membership.objects.create(workspace=workspace, user=owner, role=Role.OWNER)
    return workspace


def add_member(workspace: Workspace, user: User, role: str = Role.MEMBER) -> Membership:
    return Membership.objects.create(workspace=workspace, user=user, role=role)
