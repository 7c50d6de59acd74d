#!/usr/bin/env node
// Interop peer for the Forward protocol handshake (HELO / PING / PONG), computed by
// @fluent-org/logger's own protocol module (build/src/protocol.js): its sha512 digests
// (Node's crypto, `hash.update` of strings as UTF-8 and of Buffers as raw bytes), its message
// generators and checkers, and its MessagePack encoder/decoder (@msgpack/msgpack).
//
// Usage:
//   node handshake_vectors.mjs            print known-answer vectors as one JSON object
//   node handshake_vectors.mjs run        read a JSON array of requests on stdin, print a
//                                         JSON array of answers (one per request)
//
// Binary values travel as lowercase hex (`*_hex`); text as JSON strings.
//
// Requests (`op`):
//   client_ping        {helo_hex, client_hostname, salt, key, username, password}
//                      -> {ping_hex, nonce_kind, nonce_utf8_hex}: what the library's client
//                      (FluentAuthSocket.handleHelo) answers to these HELO bytes, with the
//                      shared key salt fixed to `salt`. nonce_kind says what the decoder made
//                      of the nonce ("string" or "bytes"), nonce_utf8_hex the bytes it hashes.
//   check_pong         {pong_hex, helo_hex, client_hostname, salt, key}
//                      -> {ok: true} | {ok: false, error}: the library client's checkPong.
//   server_check_ping  {ping_hex, nonce_hex, key, server_hostname, auth_salt_hex?, users?}
//                      -> {ok, error?, pong_hex}: the library server's checkPing and the PONG
//                      it then sends (FluentServer.handleConnection).
import { createRequire } from "node:module";
import crypto from "node:crypto";

const require = createRequire(import.meta.url);
const protocol = require("@fluent-org/logger/build/src/protocol.js");

const hex = (buf) => Buffer.from(buf).toString("hex");
const unhex = (s) => Buffer.from(s, "hex");
const sha512hex = (...parts) => {
  const h = crypto.createHash("sha512");
  for (const p of parts) h.update(p);
  return h.digest("hex");
};

// The library's digests are module-private (sharedKeyHash, userPasswordHash): take them from
// its generators, which put them in the messages.
function sharedKeyDigest(salt, hostname, nonce, key) {
  return protocol.generatePing(hostname, { salt, nonce, key }, undefined)[3];
}
function passwordDigest(salt, username, password) {
  return protocol.generatePing("h", { salt: "", nonce: "", key: "" }, { salt, username, password })[5];
}

function vectors() {
  // Salts and nonces as Buffers (the library hashes their raw bytes), hostnames and keys as
  // strings (hashed as UTF-8), as its client and server pass them.
  const shared = [
    { salt: "73616c74", hostname: "client.example", nonce: "000102030405060708090a0b0c0d0e0f", key: "secret" },
    { salt: "ff00fe80c0c1", hostname: "hôte-ü.example", nonce: "fffe80818283c0afedbfbf", key: "clé partagée" },
    { salt: "", hostname: "", nonce: "", key: "" },
    { salt: hex("0123456789abcdef0123456789abcdef"), hostname: "server", nonce: hex("fedcba9876543210fedcba9876543210"), key: "k" },
  ].map((c) => ({
    ...c,
    digest: sharedKeyDigest(unhex(c.salt), c.hostname, unhex(c.nonce), c.key),
    // An independent computation with Node's crypto alone, to pin what the library does.
    node_crypto: sha512hex(unhex(c.salt), c.hostname, unhex(c.nonce), c.key),
  }));
  const password = [
    { auth_salt: "a1b2c3d4e5f60718293a4b5c6d7e8f90", username: "alice", password: "pässword" },
    { auth_salt: "ff80", username: "", password: "" },
  ].map((c) => ({
    ...c,
    digest: passwordDigest(unhex(c.auth_salt), c.username, c.password),
    node_crypto: sha512hex(unhex(c.auth_salt), c.username, c.password),
  }));

  // Messages as the library encodes them.
  const nonce = unhex("00112233445566778899aabbccddeeff");
  const authSalt = unhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0");
  const info = { salt: "node-salt-5f0e0d5b2c3a4b6c", nonce, key: "secret" }; // salt a string, as its client makes it
  const messages = {
    // FluentServer's HELO: nonce a Buffer (bin), auth "" without users, keepalive true
    helo_no_users: hex(protocol.encodeMessage(protocol.generateHelo(nonce, "", true))),
    helo_users: hex(protocol.encodeMessage(protocol.generateHelo(nonce, authSalt, false))),
    ping_no_users: hex(protocol.encodeMessage(protocol.generatePing("node-client", info, undefined))),
    ping_users: hex(
      protocol.encodeMessage(
        protocol.generatePing("node-client", info, { salt: authSalt, username: "alice", password: "pw" }),
      ),
    ),
    pong_ok: hex(protocol.encodeMessage(protocol.generatePong("node-server", true, "", info))),
    pong_refused: hex(
      protocol.encodeMessage(protocol.generatePong("node-server", false, "shared key mismatch", undefined)),
    ),
  };
  return {
    shared,
    password,
    messages,
    inputs: {
      nonce: hex(nonce),
      auth_salt: hex(authSalt),
      salt_text: info.salt,
      key: info.key,
      client_hostname: "node-client",
      server_hostname: "node-server",
      username: "alice",
      password: "pw",
    },
  };
}

function decodeHelo(heloHex) {
  const helo = protocol.decode(unhex(heloHex));
  if (!protocol.isHelo(helo)) throw new Error("not a HELO for the library");
  return protocol.parseHelo(helo);
}

function run(req) {
  try {
    switch (req.op) {
      case "client_ping": {
        // FluentAuthSocket.handleHelo, with the salt fixed
        const opts = decodeHelo(req.helo_hex);
        const info = { salt: req.salt, nonce: opts.nonce, key: req.key };
        const auth = opts.auth ? { username: req.username, password: req.password, salt: opts.auth } : undefined;
        const ping = protocol.generatePing(req.client_hostname, info, auth);
        return {
          ok: true,
          ping_hex: hex(protocol.encodeMessage(ping)),
          nonce_kind: typeof opts.nonce === "string" ? "string" : "bytes",
          nonce_utf8_hex: typeof opts.nonce === "string" ? Buffer.from(opts.nonce, "utf8").toString("hex") : hex(opts.nonce),
        };
      }
      case "check_pong": {
        const opts = decodeHelo(req.helo_hex);
        const pong = protocol.decode(unhex(req.pong_hex));
        if (!protocol.isPong(pong)) throw new Error("not a PONG for the library");
        protocol.checkPong(pong, req.client_hostname, { salt: req.salt, nonce: opts.nonce, key: req.key });
        return { ok: true };
      }
      case "server_check_ping": {
        // FluentServer.handleConnection: serverKeyInfo {nonce, key}, authInfo {salt, userDict}
        const serverKeyInfo = { nonce: unhex(req.nonce_hex), key: req.key };
        const authInfo = req.auth_salt_hex ? { salt: unhex(req.auth_salt_hex), userDict: req.users || {} } : undefined;
        const ping = protocol.decode(unhex(req.ping_hex));
        if (!protocol.isPing(ping)) throw new Error("not a PING for the library");
        let result;
        try {
          result = protocol.checkPing(ping, req.server_hostname, serverKeyInfo, authInfo);
        } catch (e) {
          const pong = protocol.generatePong(req.server_hostname, false, e.message, undefined);
          return { ok: false, error: e.message, pong_hex: hex(protocol.encodeMessage(pong)) };
        }
        const pong = protocol.generatePong(req.server_hostname, true, "", result.sharedKeyInfo);
        return { ok: true, pong_hex: hex(protocol.encodeMessage(pong)) };
      }
      default:
        throw new Error(`unknown op ${req.op}`);
    }
  } catch (e) {
    return { ok: false, error: String(e && e.message ? e.message : e) };
  }
}

async function readStdin() {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  return Buffer.concat(chunks).toString("utf8");
}

const mode = process.argv[2] || "vectors";
if (mode === "vectors") {
  process.stdout.write(JSON.stringify(vectors()) + "\n");
} else if (mode === "run") {
  const requests = JSON.parse(await readStdin());
  process.stdout.write(JSON.stringify(requests.map(run)) + "\n");
} else {
  process.stderr.write("usage: node handshake_vectors.mjs [vectors|run]\n");
  process.exit(2);
}
