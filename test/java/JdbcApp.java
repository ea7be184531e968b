// JdbcApp: a JDBC application (Debian libpostgresql-jdbc-java) run through
// pgveil by test/clients_test.go. It knows nothing about encryption.
//
// Usage: java -cp postgresql.jar:. JdbcApp JDBC_URL [EXTRA_PARAMS [simple]] < input
//
// JDBC_URL has no query string; the program adds its own parameters, and
// EXTRA_PARAMS ("a=b&c=d") to every connection. With "simple", it also
// looks a user up on a preferQueryMode=simple connection.
// Input lines are "kind<TAB>field<TAB>field...", each field base64 of UTF-8,
// or "~" for NULL. Kinds: user (email, full_name) inserted one by one with
// a PreparedStatement; batch (email, full_name) inserted with addBatch in
// two halves, reWriteBatchedInserts=false then true; task (title,
// description) likewise for tasks; missing (email) an email never inserted.
//
// The result is one JSON object on stdout; every string is ASCII (\\u
// escapes) so the test does not depend on the platform charset.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.sql.Array;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;

import org.postgresql.PGStatement;

public class JdbcApp {
    static final StringBuilder out = new StringBuilder("{");
    static boolean first = true;

    static String q(String s) {
        if (s == null) {
            return "null";
        }
        StringBuilder b = new StringBuilder("\"");
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '"' || c == '\\') {
                b.append('\\').append(c);
            } else if (c < 0x20 || c > 0x7e) {
                b.append(String.format("\\u%04x", (int) c));
            } else {
                b.append(c);
            }
        }
        return b.append('"').toString();
    }

    static String arr(List<String> items) {
        return "[" + String.join(",", items) + "]";
    }

    static void field(String name, String json) {
        if (!first) {
            out.append(',');
        }
        first = false;
        out.append(q(name)).append(':').append(json);
    }

    static String dec(String f) {
        if (f.equals("~")) {
            return null;
        }
        return new String(Base64.getDecoder().decode(f), StandardCharsets.UTF_8);
    }

    static String row(ResultSet rs, int n) throws SQLException {
        List<String> cols = new ArrayList<>();
        for (int i = 1; i <= n; i++) {
            cols.add(q(rs.getString(i)));
        }
        return arr(cols);
    }

    static String counts(int[] cs) {
        List<String> l = new ArrayList<>();
        for (int c : cs) {
            l.add(Integer.toString(c));
        }
        return arr(l);
    }

    public static void main(String[] args) throws Exception {
        String extra = args.length > 1 && !args[1].isEmpty() ? "&" + args[1] : "";
        String url = args[0];
        boolean simple = args.length > 2 && args[2].equals("simple");
        List<String[]> users = new ArrayList<>(), batch = new ArrayList<>(), tasks = new ArrayList<>();
        String missing = null;
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.US_ASCII));
        for (String line; (line = in.readLine()) != null;) {
            if (line.isEmpty()) {
                continue;
            }
            String[] f = line.split("\t", -1);
            String[] v = new String[f.length - 1];
            for (int i = 1; i < f.length; i++) {
                v[i - 1] = dec(f[i]);
            }
            switch (f[0]) {
                case "user": users.add(v); break;
                case "batch": batch.add(v); break;
                case "task": tasks.add(v); break;
                case "missing": missing = v[0]; break;
                default: throw new IllegalArgumentException("unknown input kind " + f[0]);
            }
        }

        try (Connection c = DriverManager.getConnection(url + "?sslmode=disable&reWriteBatchedInserts=false" + extra);
             Connection cr = DriverManager.getConnection(url + "?sslmode=disable&reWriteBatchedInserts=true" + extra);
             Connection cs = DriverManager.getConnection(url + "?sslmode=disable&preferQueryMode=simple" + extra)) {
            field("driver", q(c.getMetaData().getDriverVersion()));
            field("prepare_threshold", Integer.toString(c.unwrap(org.postgresql.PGConnection.class).getPrepareThreshold()));

            // One PreparedStatement executed once per user: past the
            // prepare threshold the driver switches to a named server-side
            // statement. Generated keys come back through RETURNING.
            List<String> inserted = new ArrayList<>();
            List<String> prepared = new ArrayList<>();
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO users (email, full_name, age) VALUES (?, ?, ?)",
                    new String[] {"id", "email", "full_name"})) {
                int age = 20;
                for (String[] u : users) {
                    ps.setString(1, u[0]);
                    ps.setString(2, u[1]);
                    ps.setInt(3, age++);
                    if (ps.executeUpdate() != 1) {
                        throw new IllegalStateException("insert did not insert one row");
                    }
                    try (ResultSet rs = ps.getGeneratedKeys()) {
                        rs.next();
                        inserted.add(row(rs, 3));
                    }
                    prepared.add(Boolean.toString(ps.unwrap(PGStatement.class).isUseServerPrepare()));
                }
            }
            field("inserted", arr(inserted));
            field("insert_server_prepared", arr(prepared));

            // Lookups by email, past the threshold too.
            List<String> lookups = new ArrayList<>();
            try (PreparedStatement ps = c.prepareStatement("SELECT id, email, full_name, age FROM users WHERE email = ?")) {
                List<String> emails = new ArrayList<>();
                for (String[] u : users) {
                    emails.add(u[0]);
                }
                emails.add(missing);
                for (String e : emails) {
                    ps.setString(1, e);
                    try (ResultSet rs = ps.executeQuery()) {
                        List<String> rows = new ArrayList<>();
                        while (rs.next()) {
                            rows.add(row(rs, 4));
                        }
                        lookups.add(arr(rows));
                    }
                }
            }
            field("lookups", arr(lookups));

            // = ANY(array parameter), executed repeatedly.
            List<String> anys = new ArrayList<>();
            try (PreparedStatement ps = c.prepareStatement("SELECT email, full_name FROM users WHERE email = ANY(?) ORDER BY id")) {
                for (int i = 0; i < 7; i++) {
                    Array a = c.createArrayOf("text", new Object[] {users.get(i % users.size())[0], missing, users.get((i + 3) % users.size())[0]});
                    ps.setArray(1, a);
                    try (ResultSet rs = ps.executeQuery()) {
                        List<String> rows = new ArrayList<>();
                        while (rs.next()) {
                            rows.add(row(rs, 2));
                        }
                        anys.add(arr(rows));
                    }
                }
            }
            field("any", arr(anys));

            // UPDATE by email, past the threshold.
            List<String> updated = new ArrayList<>();
            try (PreparedStatement ps = c.prepareStatement("UPDATE users SET full_name = ? WHERE email = ?")) {
                for (String[] u : users) {
                    ps.setString(1, u[1] == null ? null : u[1] + " (v2)");
                    ps.setString(2, u[0]);
                    updated.add(Integer.toString(ps.executeUpdate()));
                }
            }
            field("update_counts", arr(updated));

            // Batched inserts: half plain, half rewritten into multi-row
            // VALUES by the driver.
            String insUser = "INSERT INTO users (email, full_name, age) VALUES (?, ?, ?)";
            int half = batch.size() / 2;
            for (int part = 0; part < 2; part++) {
                Connection bc = part == 0 ? c : cr;
                try (PreparedStatement ps = bc.prepareStatement(insUser)) {
                    for (String[] u : part == 0 ? batch.subList(0, half) : batch.subList(half, batch.size())) {
                        ps.setString(1, u[0]);
                        ps.setString(2, u[1]);
                        ps.setInt(3, 70);
                        ps.addBatch();
                    }
                    field(part == 0 ? "batch_counts" : "batch_rewrite_counts", counts(ps.executeBatch()));
                }
            }
            long owner;
            try (PreparedStatement ps = c.prepareStatement("SELECT id FROM users WHERE email = ?")) {
                ps.setString(1, users.get(0)[0]);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    owner = rs.getLong(1);
                }
            }
            String insTask = "INSERT INTO tasks (user_id, title, description) VALUES (?, ?, ?)";
            half = tasks.size() / 2;
            for (int part = 0; part < 2; part++) {
                Connection bc = part == 0 ? c : cr;
                try (PreparedStatement ps = bc.prepareStatement(insTask)) {
                    for (String[] t : part == 0 ? tasks.subList(0, half) : tasks.subList(half, tasks.size())) {
                        ps.setLong(1, owner);
                        ps.setString(2, t[0]);
                        ps.setString(3, t[1]);
                        ps.addBatch();
                    }
                    field(part == 0 ? "task_batch_counts" : "task_batch_rewrite_counts", counts(ps.executeBatch()));
                }
            }

            // Read tasks back, repeatedly (past the threshold).
            List<String> taskReads = new ArrayList<>();
            try (PreparedStatement ps = c.prepareStatement("SELECT title, description FROM tasks WHERE user_id = ? ORDER BY id")) {
                for (int i = 0; i < 6; i++) {
                    ps.setLong(1, owner);
                    try (ResultSet rs = ps.executeQuery()) {
                        List<String> rows = new ArrayList<>();
                        while (rs.next()) {
                            rows.add(row(rs, 2));
                        }
                        taskReads.add(arr(rows));
                    }
                }
            }
            field("tasks", arr(taskReads));

            // preferQueryMode=simple: the driver inlines the parameter, as
            // "email = ('value')".
            if (simple) try (PreparedStatement ps = cs.prepareStatement("SELECT email, full_name FROM users WHERE email = ?")) {
                ps.setString(1, batch.get(batch.size() - 1)[0]);
                try (ResultSet rs = ps.executeQuery()) {
                    List<String> rows = new ArrayList<>();
                    while (rs.next()) {
                        rows.add(row(rs, 2));
                    }
                    field("simple_lookup", arr(rows));
                }
            }

            // Everything, with a plain Statement.
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT email, full_name FROM users ORDER BY id")) {
                List<String> rows = new ArrayList<>();
                while (rs.next()) {
                    rows.add(row(rs, 2));
                }
                field("all_users", arr(rows));
            }
        }
        out.append("}\n");
        System.out.print(out);
        System.out.flush();
    }
}
