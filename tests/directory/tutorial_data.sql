-- The tutorial's example data (SPEC section 2), loaded into tutorial.sql.

INSERT INTO domain (domain, node, comment) VALUES
    ('server1.example.com', 'maila', NULL),
    ('other.example.com', 'maila', NULL);

INSERT INTO transport (domain, transport, node) VALUES
    ('server1.example.com', 'smtp:[10.0.0.2]', '');

INSERT INTO mailbox (email, password, node) VALUES
    ('james@server1.example.com', 'secret', 'maila');

INSERT INTO relay (source, node) VALUES
    ('david@server1.example.com', 'maila'),
    ('@other.example.com', 'maila');

INSERT INTO forward (source, destination) VALUES
    ('@server1.example.com', 'james@example.com');
