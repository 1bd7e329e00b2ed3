"""Users, their organizations and API keys.

An API key is shown once and stored as its SHA-256: keys are long random strings, so a plain
hash is enough (no salt or slow hash needed), and lookup by hash is one indexed query.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from provisioning_pipelines.errors import Conflict, InvalidRequest, NotFound
from provisioning_pipelines.services.validation import text_problem
from provisioning_pipelines.storage.models import (
    BillingCustomer,
    Membership,
    Organization,
    User,
    new_id,
)

EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
API_KEY_PREFIX = "ppk_"


@dataclass(frozen=True)
class NewUser:
    user_id: str
    org_id: str
    api_key: str


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def create_user(
    session: Session, *, email: str, org_name: str | None = None, invoice_billing: bool = False
) -> NewUser:
    """A user, their organization (new unless one of that name exists) and an API key."""
    if (not isinstance(email, str) or not EMAIL.fullmatch(email)
            or text_problem(email, max_length=320)):
        raise InvalidRequest(f"email: {email!r} is not an email address", field="email")
    # Case-blind, as a member is found by email: two accounts an email's case apart could not
    # be told apart when one is added to a graph.
    taken = session.scalar(select(User.email).where(func.lower(User.email) == email.lower()))
    if taken is not None:
        raise Conflict(f"email: a user with {taken!r} exists already"
                       + ("" if taken == email else " (emails are compared case-blind)"),
                       field="email")
    org = None
    if org_name:
        org = session.scalar(select(Organization).where(Organization.name == org_name))
    if org is None:
        org = Organization(id=new_id("org"), name=org_name or email.split("@", 1)[1])
        session.add(org)
        session.flush()
        session.add(BillingCustomer(id=new_id("cus"), org_id=org.id,
                                    invoice_billing=invoice_billing))
    api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    user = User(id=new_id("usr"), email=email, api_key_hash=hash_api_key(api_key))
    session.add(user)
    session.flush()
    session.add(Membership(user_id=user.id, org_id=org.id, role="owner"))
    session.flush()
    return NewUser(user_id=user.id, org_id=org.id, api_key=api_key)


@dataclass(frozen=True)
class Identity:
    """Who an API key belongs to."""

    user_id: str
    email: str


def authenticate(session: Session, api_key: str | None) -> Identity | None:
    """The user whose key this is, or None. The stored hash is compared in constant time."""
    if not api_key:
        return None
    digest = hash_api_key(api_key)
    user = session.scalar(select(User).where(User.api_key_hash == digest))
    if user is None or user.api_key_hash is None:
        return None
    if not hmac.compare_digest(user.api_key_hash, digest):
        return None
    return Identity(user_id=user.id, email=user.email)


def org_of(session: Session, user_id: str) -> str:
    if not isinstance(user_id, str) or session.get(User, user_id[:64]) is None:
        raise NotFound(f"user_id: no user {str(user_id)[:70]!r}", field="user_id")
    org_id = session.scalar(select(Membership.org_id).where(Membership.user_id == user_id))
    if org_id is None:
        raise InvalidRequest(f"user_id: {user_id!r} belongs to no organization", field="user_id")
    return org_id
