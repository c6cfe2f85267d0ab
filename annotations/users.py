"""Users, roles, passwords and sign-in sessions.

Passwords are hashed with Argon2id (argon2-cffi); only the hash is stored, and a hash made with
older parameters is replaced at the next successful sign-in. Nothing here logs or returns a
password, so not even an admin can read one; an admin can only set a new one.

Sign-in reveals nothing about which usernames exist: the message is the same for an unknown user,
an inactive user and a wrong password, and a password hash is always verified (against a dummy hash
for unknown users) so the time taken is the same too. After ``FREE_FAILURES`` consecutive failures
for a typed username, further attempts for it are refused for a delay that doubles with each
failure, up to ``MAX_DELAY_S``; a success resets the count.

Password hashing is deliberately slow, so it is done outside write transactions: SQLite has one
writer at a time and must not wait on it.

Browser sessions are random tokens handed to the client; the database keeps only their SHA-256.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import re
import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from annotations.db import write_session
from annotations.models import ROLES, Lease, LoginFailure, LoginSession, User, utcnow
from cftclip_core.errors import CftClipError

log = logging.getLogger(__name__)

USERNAME_PATTERN = re.compile(r"[a-z0-9._-]{2,80}")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024  # argon2 accepts more; a bound keeps a huge paste from being hashed
MAX_DISPLAY_NAME_LENGTH = 200  # User.display_name
FREE_FAILURES = 5
MAX_DELAY_S = 15 * 60
DEFAULT_SESSION_HOURS = 12
WRONG_CREDENTIALS = "Wrong username or password."

# Argon2id with the library's recommended parameters. Tests swap in cheaper parameters.
hasher = PasswordHasher()


class AuthError(CftClipError):
    """A user, password, role or session request that cannot be carried out as asked."""


class WrongCredentialsError(AuthError):
    """Sign-in refused; deliberately silent about whether the user exists or is active."""

    def __init__(self) -> None:
        super().__init__(WRONG_CREDENTIALS)


class TooManyFailuresError(AuthError):
    """Sign-in refused without checking the password, after repeated failures for this username."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"Too many failed sign-ins for this username; try again in {retry_after_s} s.")
        self.retry_after_s = retry_after_s


# --- validation ------------------------------------------------------------------------------


def normalize_username(name: str) -> str:
    """The stored form of a username: stripped, lower-case, 2-80 characters of a-z 0-9 . _ -."""
    normalized = (name or "").strip().lower()
    if not USERNAME_PATTERN.fullmatch(normalized):
        shown = normalized if len(normalized) <= 80 else normalized[:77] + "..."
        raise AuthError(
            f"Username '{shown}' is not allowed: use 2 to 80 characters, only letters a-z, digits, '.', '_' "
            "and '-' (for example 'jane.doe')."
        )
    return normalized


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise AuthError(f"Unknown role '{role}': choose one of {', '.join(ROLES)}.")
    return role


def _check_password(password: str, username: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise AuthError(f"The password is too short: use at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AuthError(f"The password is too long: use at most {MAX_PASSWORD_LENGTH} characters.")
    if password.strip().lower() == username:
        raise AuthError("The password must not be the username: choose a different password.")


def _check_display_name(display_name: str) -> str:
    cleaned = (display_name or "").strip()
    if len(cleaned) > MAX_DISPLAY_NAME_LENGTH:
        raise AuthError(f"The display name is too long: use at most {MAX_DISPLAY_NAME_LENGTH} characters.")
    return cleaned


# --- hashing ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _dummy_hash(current: PasswordHasher) -> str:
    """A hash of a random secret made with the current parameters, verified for unknown users."""
    return current.hash(secrets.token_urlsafe(32))


def _verify(password_hash: str, password: str) -> bool:
    try:
        return hasher.verify(password_hash, password)
    except VerificationError:
        return False
    except InvalidHashError:
        log.error("A stored password hash is not a valid Argon2 hash; reset that user's password.")
        return False


# --- users -----------------------------------------------------------------------------------


def _lock_users(session: Session) -> None:
    """Serialise transactions that count users before writing (PostgreSQL; SQLite's BEGIN IMMEDIATE
    already does). Reads are not blocked."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"LOCK TABLE {User.__tablename__} IN EXCLUSIVE MODE"))


def get_user(session: Session, username: str) -> User:
    """The user with this username (any case, surrounding spaces ignored); AuthError if none."""
    normalized = normalize_username(username)
    user = session.scalar(select(User).where(User.username == normalized))
    if user is None:
        raise AuthError(f"There is no user '{normalized}'. List the users with `python -m annotations users list`.")
    return user


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


def _new_user(username: str, password: str, role: str, display_name: str) -> User:
    """A validated, hashed, not yet added user (hashing happens here, outside any transaction)."""
    normalized = normalize_username(username)
    _check_role(role)
    _check_password(password, normalized)
    return User(
        username=normalized,
        display_name=_check_display_name(display_name),
        password_hash=hasher.hash(password),
        role=role,
        active=True,
        created_at=utcnow(),
    )


def _duplicate(username: str) -> AuthError:
    return AuthError(f"The username '{username}' is already taken: choose another one.")


def create_user(factory: sessionmaker[Session], username: str, password: str, role: str, display_name: str = "") -> User:
    """Add an active user; nothing is written if any value is refused or the username is taken."""
    user = _new_user(username, password, role, display_name)
    try:
        with write_session(factory) as session:
            if session.scalar(select(User.id).where(User.username == user.username)) is not None:
                raise _duplicate(user.username)
            session.add(user)
    except IntegrityError:  # created at the same moment by someone else
        raise _duplicate(user.username) from None
    log.info("Created %s '%s'.", role, user.username)
    return user


def needs_setup(factory: sessionmaker[Session]) -> bool:
    """True while the database has no user at all (the app then offers to create the first admin)."""
    with factory() as session:
        return session.scalar(select(User.id).limit(1)) is None


def create_first_admin(factory: sessionmaker[Session], username: str, password: str, display_name: str = "") -> User:
    """Create the first administrator; refused as soon as any user exists, even under a race."""
    user = _new_user(username, password, "admin", display_name)
    with write_session(factory) as session:
        _lock_users(session)
        if session.scalar(select(func.count()).select_from(User)):
            raise AuthError(
                "An administrator already exists; sign in with that account, or ask an admin to create yours."
            )
        session.add(user)
    log.info("Created the first administrator '%s'.", user.username)
    return user


def _refuse_if_last_admin(session: Session, user: User, action: str) -> None:
    if user.role != "admin" or not user.active:
        return
    others = session.scalar(
        select(func.count()).select_from(User).where(User.role == "admin", User.active.is_(True), User.id != user.id)
    )
    if not others:
        raise AuthError(
            f"Cannot {action} '{user.username}': they are the last active administrator. "
            "Make another user an admin first."
        )


def reset_password(factory: sessionmaker[Session], username: str, new_password: str) -> None:
    """Set a new password, sign the user out everywhere, and lift any sign-in slowdown."""
    normalized = normalize_username(username)
    _check_password(new_password, normalized)
    new_hash = hasher.hash(new_password)
    with write_session(factory) as session:
        user = get_user(session, normalized)
        user.password_hash = new_hash
        session.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
        session.execute(delete(LoginFailure).where(LoginFailure.username == normalized))
    log.info("Password of '%s' reset; their sessions were ended.", normalized)


def change_own_password(
    factory: sessionmaker[Session], user_id: int, current_password: str, new_password: str, keep_token: str | None = None
) -> None:
    """A signed-in user replaces their own password, proving they know the current one.

    Wrong current passwords count towards the same slowdown as failed sign-ins (a borrowed browser
    must not be a way to guess it). Every other session of the user ends; ``keep_token`` (the one in
    use) stays signed in.
    """
    with factory() as session:
        user = session.get(User, user_id)
        if user is None or not user.active:
            raise AuthError("This account does not exist or is deactivated; ask an administrator.")
        wait = _retry_after_s(session.get(LoginFailure, user.username), utcnow())
    if wait:
        raise TooManyFailuresError(wait)
    if not _verify(user.password_hash, current_password if isinstance(current_password, str) else ""):
        _record_failure(factory, user.username, utcnow())
        raise AuthError("The current password is not right, so nothing was changed. Type it again.")
    _check_password(new_password, user.username)
    if new_password == current_password:
        raise AuthError("The new password is the same as the current one: choose a different one.")
    new_hash = hasher.hash(new_password)
    with write_session(factory) as session:
        changed = session.execute(  # only if the password was not changed meanwhile (another tab, an admin)
            update(User).where(User.id == user.id, User.password_hash == user.password_hash).values(password_hash=new_hash)
        ).rowcount
        if not changed:
            raise AuthError("The password was changed elsewhere meanwhile; nothing was changed here. Sign in again.")
        others = delete(LoginSession).where(LoginSession.user_id == user.id)
        if keep_token:
            others = others.where(LoginSession.token_hash != _token_hash(keep_token))
        session.execute(others)
        session.execute(delete(LoginFailure).where(LoginFailure.username == user.username))
    log.info("'%s' changed their password; their other sessions were ended.", user.username)


def set_role(factory: sessionmaker[Session], username: str, role: str) -> User:
    _check_role(role)
    with write_session(factory) as session:
        _lock_users(session)
        user = get_user(session, username)
        if role != "admin":
            _refuse_if_last_admin(session, user, "change the role of")
        user.role = role
    log.info("Role of '%s' set to %s.", user.username, role)
    return user


def set_active(factory: sessionmaker[Session], username: str, active: bool) -> User:
    """(De)activate a user. A deactivated user is signed out and their leased items are released."""
    with write_session(factory) as session:
        _lock_users(session)
        user = get_user(session, username)
        if not active:
            _refuse_if_last_admin(session, user, "deactivate")
            session.execute(delete(LoginSession).where(LoginSession.user_id == user.id))
            session.execute(delete(Lease).where(Lease.user_id == user.id))
        user.active = active
    log.info("User '%s' %s.", user.username, "activated" if active else "deactivated")
    return user


# --- sign-in ---------------------------------------------------------------------------------


def _retry_after_s(failure: LoginFailure | None, now: datetime) -> int:
    """Seconds until this username may try again (0: now)."""
    if failure is None or failure.failures < FREE_FAILURES:
        return 0
    delay = min(2 ** min(failure.failures - FREE_FAILURES, 20), MAX_DELAY_S)
    remaining = (failure.last_failed_at + timedelta(seconds=delay) - now).total_seconds()
    return max(0, math.ceil(remaining))


def _record_failure(factory: sessionmaker[Session], username: str, now: datetime) -> None:
    with write_session(factory) as session:
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        statement = insert(LoginFailure).values(username=username, failures=1, last_failed_at=now)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[LoginFailure.username],
                set_={"failures": LoginFailure.failures + 1, "last_failed_at": statement.excluded.last_failed_at},
            )
        )
        failures = session.scalar(select(LoginFailure.failures).where(LoginFailure.username == username))
    if failures is not None and failures >= FREE_FAILURES:
        log.warning("Sign-in slowdown for username '%s': %d consecutive failures.", username, failures)


def authenticate(factory: sessionmaker[Session], username: str, password: str, now: datetime | None = None) -> User:
    """The active user with this username and password; otherwise ``WrongCredentialsError`` (one
    message for every cause) or ``TooManyFailuresError`` while the slowdown holds."""
    now = now or utcnow()
    password = password if isinstance(password, str) else ""
    try:
        key: str | None = normalize_username(username)
    except AuthError:
        key = None  # no such user can exist; still costs a verification below
    user: User | None = None
    if key is not None:
        with factory() as session:
            wait = _retry_after_s(session.get(LoginFailure, key), now)
            if wait:
                raise TooManyFailuresError(wait)
            user = session.scalar(select(User).where(User.username == key))
    if user is None:
        _verify(_dummy_hash(hasher), password)
    elif _verify(user.password_hash, password) and user.active:
        new_hash = hasher.hash(password) if hasher.check_needs_rehash(user.password_hash) else None
        with write_session(factory) as session:
            session.execute(delete(LoginFailure).where(LoginFailure.username == key))
            if new_hash is not None:  # only if the password was not changed meanwhile
                session.execute(
                    update(User)
                    .where(User.id == user.id, User.password_hash == user.password_hash)
                    .values(password_hash=new_hash)
                )
        if new_hash is not None:
            user.password_hash = new_hash
            log.info("Password hash of '%s' upgraded to the current parameters.", key)
        return user
    if key is not None:
        _record_failure(factory, key, now)
    raise WrongCredentialsError()


# --- sessions --------------------------------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def start_session(
    factory: sessionmaker[Session], user_id: int, hours: float = DEFAULT_SESSION_HOURS, now: datetime | None = None
) -> str:
    """A new session token for an active user (give it to the browser; only its hash is stored)."""
    if not hours > 0:
        raise AuthError(f"A session must last a positive number of hours, not {hours}.")
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    with write_session(factory) as session:
        user = session.get(User, user_id)
        if user is None or not user.active:
            raise AuthError("This account does not exist or is deactivated; ask an administrator.")
        # Housekeeping: this user's expired sessions are of no use to anyone.
        session.execute(delete(LoginSession).where(LoginSession.user_id == user_id, LoginSession.expires_at <= now))
        session.add(
            LoginSession(token_hash=_token_hash(token), user_id=user_id, created_at=now, expires_at=now + timedelta(hours=hours))
        )
    return token


def user_for_session(factory: sessionmaker[Session], token: str | None, now: datetime | None = None) -> User | None:
    """The active user signed in with this token, or None (unknown, ended or expired token)."""
    if not token:
        return None
    now = now or utcnow()
    with factory() as session:
        return session.scalar(
            select(User)
            .join(LoginSession, LoginSession.user_id == User.id)
            .where(LoginSession.token_hash == _token_hash(token), LoginSession.expires_at > now, User.active.is_(True))
        )


def end_session(factory: sessionmaker[Session], token: str | None) -> None:
    """Sign out this token (nothing happens for an unknown one)."""
    if not token:
        return
    with write_session(factory) as session:
        session.execute(delete(LoginSession).where(LoginSession.token_hash == _token_hash(token)))


def end_all_sessions(factory: sessionmaker[Session], user_id: int) -> int:
    """Sign a user out everywhere; returns how many sessions were ended."""
    with write_session(factory) as session:
        result = session.execute(delete(LoginSession).where(LoginSession.user_id == user_id))
    return result.rowcount or 0
