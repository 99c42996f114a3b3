"""The baseline: a bare Falcon app under waitress that answers 200 with a tiny JSON body."""

import logging
import sys

import falcon
import waitress


class Ok:
    def on_get(self, req, resp):
        resp.data = b'{"0":{"power_limit_mw":700000}}'
        resp.content_type = "application/json"

    on_post = on_get


def main() -> None:
    path, threads = sys.argv[1], int(sys.argv[2])
    logging.getLogger("waitress").setLevel(logging.ERROR)  # no "queue depth" chatter
    app = falcon.App()
    app.add_sink(Ok().on_get, "/")
    waitress.serve(app, unix_socket=path, unix_socket_perms="666", threads=threads,
                   _quiet=True)


if __name__ == "__main__":
    main()
