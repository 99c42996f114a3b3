"""waitress's request parser, with the errors it lets escape turned into a 400.

waitress converts a Content-Length with ``int()`` after checking only that it is all
digits, so one longer than Python's int-string limit (4300 digits) raises ValueError; a
malformed IPv6 authority in an absolute request target makes ``urlsplit`` raise one too.
Neither is a ParsingError, so waitress would log an "uncaptured python exception" and drop
the connection unanswered. Here they become ParsingErrors, which waitress answers with 400
and a closed connection (PeerErrorTask words it), before any of the request is served.
"""

from __future__ import annotations

from waitress.parser import HTTPRequestParser, ParsingError

MAX_CONTENT_LENGTH_DIGITS = 19  # any body zeusd accepts fits in far fewer


class PeerRequestParser(HTTPRequestParser):
    def parse_header(self, header_plus):
        try:
            super().parse_header(header_plus)
        except ValueError:
            raise ParsingError(self._why_unparsable()) from None

    def _why_unparsable(self) -> str:
        length = self.headers.get("CONTENT_LENGTH", "")
        if len(length) > MAX_CONTENT_LENGTH_DIGITS:
            return (f"the Content-Length header has {len(length)} characters; at most "
                    f"{MAX_CONTENT_LENGTH_DIGITS} digits are accepted")
        return "the request line or a header could not be parsed"
