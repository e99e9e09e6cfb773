#!/usr/bin/env python3
"""An SMTP sink for the tests, on loopback: speaks enough SMTP (EHLO/HELO,
MAIL, RCPT, DATA, RSET, NOOP, QUIT) for a real client, and appends each
message to a JSON-lines file: envelope sender, recipients, the raw message,
and its From, To, Subject and plain-text body as Python's email package
decodes them.

    smtp_sink.py --log FILE [--port P]

Prints its port on the first line of stdout. A recipient whose address
contains "reject" is refused with 550 (a permanent error).
"""

import argparse
import email
import email.policy
import json
import socketserver
import sys
import threading


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", required=True)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    lock = threading.Lock()

    class Session(socketserver.StreamRequestHandler):
        def reply(self, line):
            self.wfile.write((line + "\r\n").encode())
            self.wfile.flush()

        def handle(self):
            self.reply("220 sink.test ESMTP")
            sender, rcpts = None, []
            while True:
                raw = self.rfile.readline()
                if not raw:
                    return
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                verb = line.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    self.wfile.write(b"250-sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                elif verb == "HELO":
                    self.reply("250 sink.test")
                elif verb == "MAIL":
                    sender, rcpts = line.split(":", 1)[1].strip(), []
                    self.reply("250 ok")
                elif verb == "RCPT":
                    rcpt = line.split(":", 1)[1].strip()
                    if "reject" in rcpt:
                        self.reply("550 5.1.1 no such user")
                    else:
                        rcpts.append(rcpt)
                        self.reply("250 ok")
                elif verb == "DATA":
                    self.reply("354 go ahead")
                    lines = []
                    while True:
                        l = self.rfile.readline()
                        if not l or l in (b".\r\n", b".\n"):
                            break
                        if l.startswith(b".."):
                            l = l[1:]
                        lines.append(l)
                    data = b"".join(lines).decode("utf-8", "replace")
                    msg = email.message_from_string(data, policy=email.policy.default)
                    body = msg.get_body(preferencelist=("plain",))
                    record = {
                        "from": sender,
                        "to": rcpts,
                        "header_from": str(msg["from"]),
                        "header_to": str(msg["to"]),
                        "subject": str(msg["subject"]),
                        "body": body.get_content() if body else None,
                        "data": data,
                    }
                    with lock, open(args.log, "a") as f:
                        f.write(json.dumps(record) + "\n")
                    self.reply("250 queued")
                elif verb in ("RSET", "NOOP"):
                    self.reply("250 ok")
                elif verb == "QUIT":
                    self.reply("221 bye")
                    return
                else:
                    self.reply("502 not implemented")

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    server = Server(("127.0.0.1", args.port), Session)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
