#!/usr/bin/python3
"""A small application on SQLAlchemy 1.4 + psycopg2, run through pgveil.

It knows nothing about encryption: its models map users / tasks /
chat_history as plain text columns (email_hash is not mapped at all), as
the application did before pgveil. The Go test (test/clients_test.go)
feeds it the values to write as JSON on stdin, points it at pgveil with
PGVEIL_DSN, and checks the JSON it prints (what the application read back)
and what Postgres stores.

Runs with Debian's python3 (python3-sqlalchemy, python3-psycopg2).
"""

import csv
import io
import json
import os
import sys

import psycopg2
import sqlalchemy
from sqlalchemy import (BigInteger, Boolean, Column, DateTime, ForeignKey,
                        Integer, Text, create_engine, func, select, text)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import (Session, declarative_base, joinedload, relationship,
                            selectinload)

Base = declarative_base()


class User(Base):
    __tablename__ = "users"
    id = Column(BigInteger, primary_key=True)
    email = Column(Text, nullable=False)
    full_name = Column(Text)
    age = Column(Integer)
    created_at = Column(DateTime(timezone=True), server_default=func.now())
    tasks = relationship("Task", back_populates="user", order_by="Task.id")


class Task(Base):
    __tablename__ = "tasks"
    id = Column(BigInteger, primary_key=True)
    user_id = Column(BigInteger, ForeignKey("users.id"))
    title = Column(Text)
    description = Column(Text)
    done = Column(Boolean, server_default=text("false"))
    user = relationship("User", back_populates="tasks")


class ChatMessage(Base):
    __tablename__ = "chat_history"
    id = Column(BigInteger, primary_key=True)
    user_id = Column(BigInteger)
    message = Column(Text)
    created_at = Column(DateTime(timezone=True), server_default=func.now())


def user_json(u):
    if u is None:
        return None
    return {"id": u.id, "email": u.email, "full_name": u.full_name, "age": u.age}


def task_json(t):
    return {"id": t.id, "user_id": t.user_id, "title": t.title,
            "description": t.description, "done": t.done}


def main():
    dsn = os.environ["PGVEIL_DSN"]
    if not sqlalchemy.__version__.startswith("1.4"):
        raise SystemExit("want SQLAlchemy 1.4, have " + sqlalchemy.__version__)
    url = dsn.replace("postgres://", "postgresql+psycopg2://", 1)
    engine = create_engine(url)
    # execute_batch for UPDATE executemany: several statements joined by
    # ';' in one simple-protocol query.
    batch_engine = create_engine(url, executemany_mode="values_plus_batch")
    data = json.load(sys.stdin)
    out = {"sqlalchemy": sqlalchemy.__version__, "psycopg2": psycopg2.__version__}

    # Signup: one ORM insert per user (INSERT ... RETURNING users.id).
    ids = {}
    for u in data["users"]:
        with Session(engine) as s:
            user = User(email=u["email"], full_name=u["full_name"], age=u["age"])
            s.add(user)
            s.commit()
            ids[u["email"]] = user.id
    out["signup"] = ids

    # Login by email: filter_by(...).first() (WHERE users.email = ...
    # LIMIT 1), and a count through a subquery.
    login = {}
    with Session(engine) as s:
        for email in data["login"]:
            u = s.query(User).filter_by(email=email).first()
            j = user_json(u)
            if j is not None:
                j["count"] = s.query(User).filter_by(email=email).count()
            login[email] = j
    out["login"] = login

    # Tasks: create, list by user, through the relationship, a join.
    with Session(engine) as s:
        for t in data["tasks"]:
            owner = s.query(User).filter(User.email == t["owner"]).one()
            s.add(Task(user_id=owner.id, title=t["title"], description=t["description"]))
        s.commit()
    listed, rel, joined = {}, {}, {}
    with Session(engine) as s:
        for email in data["task_owners"]:
            uid = ids[email]
            listed[email] = [task_json(t) for t in
                             s.query(Task).filter(Task.user_id == uid).order_by(Task.id).all()]
            rel[email] = [t.title for t in s.get(User, uid).tasks]
            joined[email] = [[t.title, u.full_name] for t, u in
                             s.query(Task, User).join(User, Task.user_id == User.id)
                             .filter(User.email == email).order_by(Task.id).all()]
    out["tasks_created"] = listed
    out["tasks_relationship"] = rel
    out["tasks_join"] = joined

    # Update the title and description of one task, delete another.
    upd = data["task_update"]
    owner_tasks = listed[upd["owner"]]
    with Session(engine) as s:
        t = s.get(Task, owner_tasks[upd["index"]]["id"])
        t.title = upd["title"]
        t.description = upd["description"]
        t.done = True
        s.commit()
    with Session(engine) as s:
        s.delete(s.get(Task, owner_tasks[data["task_delete"]]["id"]))
        s.commit()
    with Session(engine) as s:
        out["task_updated"] = task_json(s.get(Task, owner_tasks[upd["index"]]["id"]))
        out["tasks_final"] = {email: [task_json(t) for t in s.query(Task).filter(
            Task.user_id == ids[email]).order_by(Task.id).all()] for email in data["task_owners"]}

    # Chat history: append one message per transaction, then read in
    # order of created_at, id.
    for m in data["chat"]:
        with Session(engine) as s:
            s.add(ChatMessage(user_id=ids[m["owner"]], message=m["message"]))
            s.commit()

    # Bulk inserts: add_all, bulk_insert_mappings, Core executemany
    # (psycopg2 execute_values: one multi-row VALUES), and psycopg2's own
    # cursor.executemany.
    with Session(engine) as s:
        s.add_all([User(email=u["email"], full_name=u["full_name"], age=u["age"])
                   for u in data["bulk_add_all"]])
        s.commit()
    with Session(engine) as s:
        s.bulk_insert_mappings(User, data["bulk_mappings"])
        s.commit()
    with engine.begin() as conn:
        conn.execute(User.__table__.insert(), data["bulk_core"])
    raw = psycopg2.connect(dsn)
    try:
        with raw:
            with raw.cursor() as cur:
                cur.executemany("INSERT INTO chat_history (user_id, message) VALUES (%s, %s)",
                                [(ids[m["owner"]], m["message"]) for m in data["chat_executemany"]])
        with raw.cursor() as cur:
            chat = {}
            for email in data["chat_owners"]:
                cur.execute("SELECT message FROM chat_history WHERE user_id = %s ORDER BY created_at, id",
                            (ids[email],))
                chat[email] = [r[0] for r in cur.fetchall()]
            out["chat_psycopg2"] = chat
            cur.execute("SELECT email, full_name FROM users WHERE email = %(e)s", {"e": data["bulk_core"][0]["email"]})
            out["psycopg2_lookup"] = list(cur.fetchone())
    finally:
        raw.close()
    with Session(engine) as s:
        out["chat"] = {email: [m.message for m in s.query(ChatMessage).filter(
            ChatMessage.user_id == ids[email]).order_by(ChatMessage.created_at, ChatMessage.id).all()]
            for email in data["chat_owners"]}

    # Batched UPDATE (execute_batch: statements joined by ';').
    with Session(batch_engine) as s:
        emails = [u["email"] for u in data["batch_update"]]
        by_email = {u.email: u.id for u in s.query(User).filter(User.email.in_(emails)).all()}
        s.bulk_update_mappings(User, [{"id": by_email[u["email"]], "full_name": u["full_name"]}
                                      for u in data["batch_update"]])
        s.commit()

    # Change an email: the blind index follows.
    ch = data["change_email"]
    with Session(engine) as s:
        s.query(User).filter_by(email=ch["from"]).one().email = ch["to"]
        s.commit()
    with Session(engine) as s:
        out["change_email"] = {
            "new": user_json(s.query(User).filter_by(email=ch["to"]).first()),
            "old": user_json(s.query(User).filter_by(email=ch["from"]).first()),
        }

    # A rolled-back transaction: visible inside, gone afterwards.
    rb = data["rollback"]
    s = Session(engine)
    try:
        u = User(email=rb["email"], full_name=rb["full_name"], age=1)
        s.add(u)
        s.flush()
        s.add(Task(user_id=u.id, title=rb["task_title"], description=rb["task_title"]))
        s.add(ChatMessage(user_id=u.id, message=rb["task_title"]))
        s.flush()
        inside = s.query(User).filter_by(email=rb["email"]).one()
        seen = {"full_name": inside.full_name, "tasks": [t.title for t in inside.tasks]}
        s.rollback()
    finally:
        s.close()
    with Session(engine) as s:
        out["rollback"] = {"seen": seen, "after": s.query(User).filter_by(email=rb["email"]).count()}

    # Upsert: INSERT ... ON CONFLICT (email) DO UPDATE, twice.
    up = data["upsert"]
    for name in (up["first"], up["second"]):
        with engine.begin() as conn:
            stmt = pg_insert(User.__table__).values(email=up["email"], full_name=name, age=44)
            conn.execute(stmt.on_conflict_do_update(index_elements=[User.__table__.c.email],
                                                    set_={"full_name": stmt.excluded.full_name}))

    # COPY FROM STDIN (CSV) with psycopg2's copy_expert.
    raw = psycopg2.connect(dsn)
    try:
        with raw:
            with raw.cursor() as cur:
                buf = io.StringIO()
                w = csv.writer(buf, lineterminator="\n")
                for u in data["copy_users"]:
                    w.writerow([u["email"], u["full_name"], u["age"]])
                buf.seek(0)
                cur.copy_expert("COPY users (email, full_name, age) FROM STDIN WITH (FORMAT csv)", buf)
    finally:
        raw.close()

    # More ORM forms on one user: FOR UPDATE, EXISTS, eager loading
    # (joinedload wraps the LIMITed query in a subquery; selectinload uses
    # IN on tasks.user_id), an empty IN list, UPDATE ... RETURNING.
    ex = data["extras"]
    with Session(engine) as s:
        u = User(email=ex["email"], full_name=ex["full_name"], age=5)
        s.add(u)
        s.flush()
        s.add(Task(user_id=u.id, title=ex["task_title"], description=None))
        s.commit()
    extras = {}
    with Session(engine) as s:
        extras["for_update"] = s.query(User).filter(User.email == ex["email"]).with_for_update().one().full_name
        s.commit()
        extras["exists"] = s.query(sqlalchemy.exists().where(User.email == ex["email"])).scalar()
        extras["exists_missing"] = s.query(sqlalchemy.exists().where(User.email == "missing@example.com")).scalar()
    with Session(engine) as s:
        u = s.query(User).options(joinedload(User.tasks)).filter(User.email == ex["email"]).first()
        extras["joinedload"] = [u.full_name] + [t.title for t in u.tasks]
    with Session(engine) as s:
        extras["selectinload"] = [[u.full_name] + [t.title for t in u.tasks] for u in
                                  s.query(User).options(selectinload(User.tasks)).filter(User.email == ex["email"]).all()]
        extras["empty_in"] = s.query(User).filter(User.email.in_([])).count()
    with Session(engine) as s:
        extras["update_returning"] = s.execute(sqlalchemy.update(User).where(User.email == ex["email"]).values(
            full_name=ex["new_name"]).returning(User.full_name, User.email)).all()[0]._asdict()
        s.commit()
    out["extras"] = extras

    # Server-side cursor: yield_per with stream_results (psycopg2 named
    # cursor, DECLARE ... CURSOR and FETCH FORWARD).
    with Session(engine) as s:
        out["streamed"] = [[u.email, u.full_name] for u in s.query(User).execution_options(
            stream_results=True).order_by(User.id).yield_per(3)]

    # IN lookups.
    with Session(engine) as s:
        out["in_lookup"] = [u.email for u in s.query(User).filter(
            User.email.in_(data["in_lookup"])).order_by(User.id).all()]
        out["not_in_count"] = s.query(User).filter(User.email.notin_(data["in_lookup"])).count()
        out["all_users"] = [[u.email, u.full_name] for u in s.execute(
            select(User).order_by(User.id)).scalars().all()]

    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
