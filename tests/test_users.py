"""Users, passwords, sign-in (same message for every failure, slowdown), sessions, admin operations
and the ``python -m annotations users`` command line, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import io
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select, text, update

from annotations import cli, users
from annotations.db import write_session
from annotations.models import Dataset, Item, Lease, LoginSession, Media, User, utcnow
from annotations.users import (
    WRONG_CREDENTIALS,
    AuthError,
    TooManyFailuresError,
    WrongCredentialsError,
    authenticate,
    create_first_admin,
    create_user,
    end_all_sessions,
    end_session,
    list_users,
    needs_setup,
    normalize_username,
    reset_password,
    set_active,
    set_role,
    start_session,
    user_for_session,
)

PASSWORD = "correct horse battery"


class CountingHasher(PasswordHasher):
    """Cheap Argon2 parameters (tests stay fast) and a count of verifications."""

    def __init__(self, time_cost: int = 1) -> None:
        super().__init__(time_cost=time_cost, memory_cost=8, parallelism=1)
        self.verifications = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:  # noqa: A002 - the library's name
        self.verifications += 1
        return super().verify(hash, password)


@pytest.fixture(autouse=True)
def cheap_hasher(monkeypatch: pytest.MonkeyPatch) -> CountingHasher:
    hasher = CountingHasher()
    monkeypatch.setattr(users, "hasher", hasher)
    return hasher


def _count_users(factory) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(User))


def _sign_in_error(factory, username: str, password: str, now) -> AuthError:
    with pytest.raises(AuthError) as caught:
        authenticate(factory, username, password, now=now)
    return caught.value


# --- passwords and users ---------------------------------------------------------------------


def test_only_an_argon2_hash_of_the_password_is_stored(factory) -> None:
    user = create_user(factory, "alice", PASSWORD, "annotator")
    with factory() as session:
        stored = session.execute(text("SELECT password_hash FROM users WHERE id = :id"), {"id": user.id}).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert authenticate(factory, "alice", PASSWORD).id == user.id


def test_a_hash_made_with_old_parameters_is_upgraded_at_sign_in(factory, monkeypatch: pytest.MonkeyPatch) -> None:
    create_user(factory, "alice", PASSWORD, "annotator")
    stronger = CountingHasher(time_cost=2)
    monkeypatch.setattr(users, "hasher", stronger)
    authenticate(factory, "alice", PASSWORD)
    with factory() as session:
        stored = session.scalar(select(User.password_hash).where(User.username == "alice"))
    assert not stronger.check_needs_rehash(stored) and ",t=2," in stored
    assert authenticate(factory, "alice", PASSWORD).username == "alice"


def test_usernames_are_stored_lower_case_and_unique(factory) -> None:
    assert normalize_username("  Jane.Doe_2-x ") == "jane.doe_2-x"
    user = create_user(factory, " Alice ", PASSWORD, "researcher", display_name=" Alice A. ")
    assert (user.username, user.display_name, user.role, user.active) == ("alice", "Alice A.", "researcher", True)
    with pytest.raises(AuthError, match="already taken"):
        create_user(factory, "ALICE", "another password", "annotator")
    assert _count_users(factory) == 1
    assert authenticate(factory, "ALICE ", PASSWORD).id == user.id


def test_bad_names_weak_passwords_and_unknown_roles_are_refused_and_nothing_is_written(factory) -> None:
    for name in ["", "a", "has space", "émile", "x" * 81, "semi;colon", "<b>"]:
        with pytest.raises(AuthError, match="2 to 80 characters"):
            create_user(factory, name, PASSWORD, "annotator")
    for password, role, message in [
        ("short", "annotator", "at least 8"),
        ("Bob.Smith", "annotator", "must not be the username"),
        (PASSWORD, "superuser", "Unknown role 'superuser'"),
    ]:
        with pytest.raises(AuthError, match=message):
            create_user(factory, "bob.smith", password, role)
    assert _count_users(factory) == 0


# --- first-run setup -------------------------------------------------------------------------


def test_first_admin_only_while_there_is_no_user(factory) -> None:
    assert needs_setup(factory)
    admin = create_first_admin(factory, "root", PASSWORD, display_name="The Admin")
    assert admin.role == "admin" and not needs_setup(factory)
    with pytest.raises(AuthError, match="An administrator already exists; sign in"):
        create_first_admin(factory, "mallory", PASSWORD)
    with factory() as session:
        assert [u.username for u in list_users(session)] == ["root"]


def test_no_first_admin_once_any_user_exists(factory) -> None:
    create_user(factory, "ann", PASSWORD, "annotator")
    with pytest.raises(AuthError, match="already exists"):
        create_first_admin(factory, "mallory", PASSWORD)
    assert _count_users(factory) == 1


def test_racing_first_admin_setups_create_exactly_one_admin(factory) -> None:
    n = 4
    barrier = threading.Barrier(n)
    outcomes: list[str] = []

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            create_first_admin(factory, f"admin{i}", PASSWORD)
            outcomes.append("created")
        except AuthError:
            outcomes.append("refused")

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["created"] + ["refused"] * (n - 1)
    assert _count_users(factory) == 1


# --- sign-in ---------------------------------------------------------------------------------


def test_every_sign_in_failure_gives_the_same_message_and_checks_a_hash(factory, cheap_hasher) -> None:
    create_user(factory, "alice", PASSWORD, "annotator")
    create_user(factory, "gone", PASSWORD, "annotator")
    set_active(factory, "gone", False)
    attempts = [("alice", "wrong password"), ("nobody", PASSWORD), ("gone", PASSWORD), ("not a name!", PASSWORD), ("", "")]
    for username, password in attempts:
        before = cheap_hasher.verifications
        error = _sign_in_error(factory, username, password, now=None)
        assert isinstance(error, WrongCredentialsError) and str(error) == WRONG_CREDENTIALS == "Wrong username or password."
        assert cheap_hasher.verifications == before + 1, username


def test_slowdown_after_five_failures_is_the_same_for_unknown_usernames(factory) -> None:
    create_user(factory, "alice", PASSWORD, "annotator")
    t0 = utcnow()
    for name in ("alice", "ghost"):
        for _ in range(5):
            assert isinstance(_sign_in_error(factory, name, "wrong password", t0), WrongCredentialsError)
    for name in ("alice", "ghost"):
        # Refused even with the right password, before the 1 s delay is over
        error = _sign_in_error(factory, name.upper(), PASSWORD, t0 + timedelta(milliseconds=300))
        assert isinstance(error, TooManyFailuresError)
        assert str(error) == "Too many failed sign-ins for this username; try again in 1 s."
    # Other usernames are not affected
    assert isinstance(_sign_in_error(factory, "carol", "x", t0), WrongCredentialsError)

    t1 = t0 + timedelta(seconds=1)  # allowed again; a sixth failure doubles the delay to 2 s
    for name in ("alice", "ghost"):
        assert isinstance(_sign_in_error(factory, name, "wrong password", t1), WrongCredentialsError)
    messages = {str(_sign_in_error(factory, name, PASSWORD, t1 + timedelta(seconds=1))) for name in ("alice", "ghost")}
    assert messages == {"Too many failed sign-ins for this username; try again in 1 s."}
    assert authenticate(factory, "alice", PASSWORD, now=t1 + timedelta(seconds=2)).username == "alice"


def test_the_delay_doubles_up_to_fifteen_minutes(factory) -> None:
    now = utcnow()
    waits = []
    for _ in range(40):
        try:
            authenticate(factory, "ghost", "wrong password", now=now)
        except TooManyFailuresError as refused:
            waits.append(refused.retry_after_s)
            now += timedelta(seconds=refused.retry_after_s)
        except WrongCredentialsError:
            pass
    assert waits[:5] == [1, 2, 4, 8, 16] and waits[-1] == 900 and max(waits) == 900


def test_a_successful_sign_in_resets_the_failure_count(factory) -> None:
    create_user(factory, "alice", PASSWORD, "annotator")
    t0 = utcnow()
    for _ in range(4):
        _sign_in_error(factory, "alice", "wrong password", t0)
    authenticate(factory, "alice", PASSWORD, now=t0)
    for _ in range(4):  # four more would have made nine in a row without the reset
        assert isinstance(_sign_in_error(factory, "alice", "wrong password", t0), WrongCredentialsError)
    assert authenticate(factory, "alice", PASSWORD, now=t0).username == "alice"


# --- sessions --------------------------------------------------------------------------------


def test_sessions_are_valid_until_ended_or_expired(factory) -> None:
    alice = create_user(factory, "alice", PASSWORD, "annotator")
    token = start_session(factory, alice.id, hours=12)
    other = start_session(factory, alice.id)
    assert user_for_session(factory, token).username == "alice"
    assert user_for_session(factory, token, now=utcnow() + timedelta(hours=11)) is not None
    assert user_for_session(factory, token, now=utcnow() + timedelta(hours=12, minutes=1)) is None
    assert user_for_session(factory, "made-up-token") is None and user_for_session(factory, "") is None
    end_session(factory, token)
    assert user_for_session(factory, token) is None
    assert user_for_session(factory, other) is not None
    assert end_all_sessions(factory, alice.id) == 1
    assert user_for_session(factory, other) is None


def test_session_tokens_are_stored_only_as_sha256(factory) -> None:
    alice = create_user(factory, "alice", PASSWORD, "annotator")
    token = start_session(factory, alice.id)
    with factory() as session:
        stored = session.execute(text("SELECT token_hash FROM login_sessions")).scalars().all()
    assert stored == [hashlib.sha256(token.encode()).hexdigest()] and token not in stored[0]


def test_no_session_for_an_inactive_user(factory) -> None:
    alice = create_user(factory, "alice", PASSWORD, "annotator")
    token = start_session(factory, alice.id)
    with write_session(factory) as session:  # switched off behind the session's back
        session.execute(update(User).where(User.id == alice.id).values(active=False))
    assert user_for_session(factory, token) is None
    with pytest.raises(AuthError, match="deactivated"):
        start_session(factory, alice.id)


# --- admin operations ------------------------------------------------------------------------


def test_password_reset_signs_out_and_replaces_the_old_password(factory) -> None:
    alice = create_user(factory, "alice", PASSWORD, "annotator")
    token = start_session(factory, alice.id)
    t0 = utcnow()
    for _ in range(6):
        _sign_in_error(factory, "alice", "wrong password", t0)
    reset_password(factory, "Alice", "a brand new secret")
    assert user_for_session(factory, token) is None
    assert isinstance(_sign_in_error(factory, "alice", PASSWORD, t0), WrongCredentialsError)  # slowdown lifted
    assert authenticate(factory, "alice", "a brand new secret", now=t0).id == alice.id
    with pytest.raises(AuthError, match="at least 8"):
        reset_password(factory, "alice", "short")
    with pytest.raises(AuthError, match="There is no user 'bob'"):
        reset_password(factory, "bob", "a brand new secret")


def test_the_last_active_admin_cannot_be_demoted_or_deactivated(factory) -> None:
    create_first_admin(factory, "root", PASSWORD)
    for change in (lambda: set_role(factory, "root", "researcher"), lambda: set_active(factory, "root", False)):
        with pytest.raises(AuthError, match="last active administrator"):
            change()
    create_user(factory, "boss", PASSWORD, "researcher")
    assert set_role(factory, "boss", "admin").role == "admin"
    assert set_role(factory, "root", "annotator").role == "annotator"
    with pytest.raises(AuthError, match="last active administrator"):
        set_active(factory, "boss", False)
    set_role(factory, "root", "admin")
    set_active(factory, "root", False)  # an inactive admin does not count as one
    with pytest.raises(AuthError, match="last active administrator"):
        set_role(factory, "boss", "researcher")
    with factory() as session:
        assert {(u.username, u.role, u.active) for u in list_users(session)} == {("boss", "admin", True), ("root", "admin", False)}


def test_two_admins_deactivating_each_other_at_once_leave_one_admin(factory, monkeypatch: pytest.MonkeyPatch) -> None:
    create_first_admin(factory, "root", PASSWORD)
    create_user(factory, "boss", PASSWORD, "admin")
    # Each transaction waits (up to 1 s) after its last-admin check for the other one to check too:
    # without a lock both would see two admins and both deactivations would go through.
    barrier = threading.Barrier(2)
    check = users._refuse_if_last_admin

    def check_then_wait(*args) -> None:  # noqa: ANN002
        check(*args)
        try:
            barrier.wait(timeout=1)
        except threading.BrokenBarrierError:
            pass  # the other transaction is blocked on the lock, as it should be

    monkeypatch.setattr(users, "_refuse_if_last_admin", check_then_wait)
    outcomes: list[str] = []

    def deactivate(username: str) -> None:
        try:
            set_active(factory, username, False)
            outcomes.append("done")
        except AuthError:
            outcomes.append("refused")

    threads = [threading.Thread(target=deactivate, args=(name,)) for name in ("root", "boss")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["done", "refused"]
    with factory() as session:
        assert sum(u.active for u in list_users(session)) == 1


def test_deactivation_signs_out_and_releases_leased_items(factory) -> None:
    create_first_admin(factory, "root", PASSWORD)
    ann = create_user(factory, "ann", PASSWORD, "annotator")
    token = start_session(factory, ann.id)
    with write_session(factory) as session:
        session.add(Media(sha256="0" * 64, suffix=".jpg", size_bytes=1, width=1, height=1))
        dataset = Dataset(name="d", source_file=None)
        session.add(dataset)
        session.flush()
        item = Item(dataset_id=dataset.id, external_id="a", media_sha256="0" * 64, image_url=None, title="t",
                    summary="s", source_label=None, split=None, extra={}, position=0)
        session.add(item)
        session.flush()
        session.add(Lease(item_id=item.id, user_id=ann.id, expires_at=utcnow() + timedelta(minutes=15)))
    assert set_active(factory, "ann", False).active is False
    assert user_for_session(factory, token) is None
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Lease)) == 0
        assert session.scalar(select(func.count()).select_from(LoginSession)) == 0
    assert isinstance(_sign_in_error(factory, "ann", PASSWORD, None), WrongCredentialsError)
    set_active(factory, "ann", True)
    assert authenticate(factory, "ann", PASSWORD).username == "ann"


# --- command line ----------------------------------------------------------------------------


class Terminal(io.StringIO):
    """Standard input as when a person runs the command in a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def run_cli(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.setenv("CFTCLIP_INSTANCE", str(tmp_path / "instance"))
    monkeypatch.setenv("CFTCLIP_DATABASE_URL", db_url)

    def run(*argv: str, stdin: str = "", terminal: bool = False) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", Terminal(stdin) if terminal else io.StringIO(stdin))
        code = cli.main(["users", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_cli_adds_lists_and_manages_users(run_cli, factory) -> None:
    assert run_cli("add", "Root", "--role", "admin", "--name", "The Root", "--password-stdin", stdin=PASSWORD + "\n")[0] == 0
    code, out, err = run_cli("add", "ann", "--role", "annotator", "--password-stdin", stdin="ann password\n")
    assert code == 0 and "Created annotator 'ann'" in out and err == ""
    code, out, _ = run_cli("list")
    with factory() as session:
        hashes = [u.password_hash for u in list_users(session)]
    assert code == 0 and "root" in out and "The Root" in out and "annotator" in out
    assert "$argon2" not in out and not any(h in out for h in hashes) and PASSWORD not in out
    assert authenticate(factory, "root", PASSWORD).role == "admin"

    assert run_cli("reset-password", "ann", "--password-stdin", stdin="new ann password\r\n")[0] == 0
    assert authenticate(factory, "ann", "new ann password").username == "ann"
    assert run_cli("set-role", "ann", "researcher")[0] == 0
    assert run_cli("deactivate", "ann")[0] == 0
    assert "no" in run_cli("list")[1].splitlines()[1]
    assert run_cli("activate", "ann")[0] == 0
    with factory() as session:
        assert {(u.username, u.role, u.active) for u in list_users(session)} == {("ann", "researcher", True), ("root", "admin", True)}


CLI_MISTAKES = [
    (("add", "root", "--role", "admin", "--password-stdin"), "another password\n", "already taken"),
    (("add", "bad name", "--role", "admin", "--password-stdin"), PASSWORD + "\n", "2 to 80 characters"),
    (("add", "newbie", "--role", "annotator", "--password-stdin"), "short\n", "at least 8"),
    (("add", "newbie", "--role", "annotator", "--password-stdin"), "", "No password on standard input"),
    (("reset-password", "nobody", "--password-stdin"), PASSWORD + "\n", "There is no user 'nobody'"),
    (("deactivate", "root"), "", "last active administrator"),
    (("set-role", "root", "annotator"), "", "last active administrator"),
]


def test_cli_mistakes_exit_2_with_one_message_and_change_nothing(run_cli, factory) -> None:
    create_first_admin(factory, "root", PASSWORD)
    for argv, stdin, message in CLI_MISTAKES:
        code, _, err = run_cli(*argv, stdin=stdin)
        assert code == 2 and err.startswith("error: ") and message in err and "Traceback" not in err, argv
        with factory() as session:
            assert [(u.username, u.role, u.active) for u in list_users(session)] == [("root", "admin", True)]


def test_cli_prompts_twice_without_stdin_flag(run_cli, factory, monkeypatch: pytest.MonkeyPatch) -> None:
    typed = iter(["first password", "other password", PASSWORD, PASSWORD])
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt="": next(typed))
    code, _, err = run_cli("add", "ann", "--role", "annotator", terminal=True)
    assert code == 2 and "differ" in err and _count_users(factory) == 0
    code, _, err = run_cli("add", "ann", "--role", "annotator", terminal=True)
    assert code == 0 and "no active admin yet" in err
    assert authenticate(factory, "ann", PASSWORD).username == "ann"


def test_cli_rejects_an_unknown_role(run_cli) -> None:
    with pytest.raises(SystemExit) as stopped:
        run_cli("add", "ann", "--role", "boss", "--password-stdin", stdin=PASSWORD + "\n")
    assert stopped.value.code == 2


def test_cli_reads_a_piped_password_only_when_asked(run_cli, factory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.getpass, "getpass", lambda prompt="": pytest.fail("getpass would echo and warn"))
    code, out, err = run_cli("add", "ann", "--role", "annotator", stdin=PASSWORD + "\n")  # a pipe, no flag
    assert code == 2 and "no terminal" in err and "--password-stdin" in err and PASSWORD not in out + err
    assert _count_users(factory) == 0
    code, out, err = run_cli("add", "ann", "--role", "annotator", "--password-stdin", stdin=PASSWORD + "\n")
    assert code == 0 and "Warning" not in err and PASSWORD not in out + err
    assert authenticate(factory, "ann", PASSWORD).username == "ann"


# --- changing one's own password ------------------------------------------------------------


def test_a_user_changes_their_own_password_and_their_other_sessions_end(factory) -> None:
    alice = create_user(factory, "alice", PASSWORD, "annotator")
    here, elsewhere = start_session(factory, alice.id), start_session(factory, alice.id)
    with pytest.raises(AuthError, match="current password is not right"):
        users.change_own_password(factory, alice.id, "not it at all", "a new long password", keep_token=here)
    with pytest.raises(AuthError, match="same as the current one"):
        users.change_own_password(factory, alice.id, PASSWORD, PASSWORD, keep_token=here)
    with pytest.raises(AuthError, match="too short"):
        users.change_own_password(factory, alice.id, PASSWORD, "tiny", keep_token=here)
    assert user_for_session(factory, elsewhere) is not None  # refusals change nothing
    users.change_own_password(factory, alice.id, PASSWORD, "a new long password", keep_token=here)
    assert authenticate(factory, "alice", "a new long password").id == alice.id
    assert user_for_session(factory, here) is not None and user_for_session(factory, elsewhere) is None


def test_wrong_current_passwords_count_towards_the_sign_in_slowdown(factory) -> None:
    alice = create_user(factory, "alice", PASSWORD, "annotator")
    for _ in range(users.FREE_FAILURES):
        with pytest.raises(AuthError, match="not right"):
            users.change_own_password(factory, alice.id, "a guess at it", "a new long password")
    with pytest.raises(TooManyFailuresError):
        users.change_own_password(factory, alice.id, PASSWORD, "a new long password")
    with pytest.raises(TooManyFailuresError):
        authenticate(factory, "alice", PASSWORD)
