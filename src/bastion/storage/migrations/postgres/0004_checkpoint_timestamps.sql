-- RFC 3161 time-stamp tokens over checkpoints (audit/timestamping.py): token is the DER
-- TimeStampToken a TSA signed over SHA-256 of a checkpoint's note; gen_time is copied out of it
-- for listing only (the verifier reads the token). One token per origin, tree size and TSA.
CREATE TABLE checkpoint_timestamps (
    origin    TEXT   NOT NULL,
    tree_size BIGINT NOT NULL,
    tsa       TEXT   NOT NULL,
    token     BYTEA  NOT NULL,
    gen_time  TEXT   NOT NULL,
    PRIMARY KEY (origin, tree_size, tsa)
);
