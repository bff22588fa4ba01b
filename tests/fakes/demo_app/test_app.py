import json
import threading
import unittest
import urllib.error
import urllib.request

from app import make_server


class NotesAppTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = make_server(0)
        cls.base = f"http://127.0.0.1:{cls.server.server_port}"
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()

    def request(self, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        with urllib.request.urlopen(urllib.request.Request(self.base + path, data=data)) as r:
            return r.status, r.read()

    def test_page(self):
        status, body = self.request("/")
        self.assertEqual(status, 200)
        self.assertIn(b"<h1>Notes</h1>", body)

    def test_add_and_list_notes(self):
        status, body = self.request("/api/notes", {"text": "buy milk"})
        self.assertEqual(status, 201)
        self.assertEqual(json.loads(body)["text"], "buy milk")
        _, body = self.request("/api/notes")
        self.assertIn("buy milk", [n["text"] for n in json.loads(body)])

    def test_empty_note_is_rejected(self):
        with self.assertRaises(urllib.error.HTTPError) as caught:
            self.request("/api/notes", {"text": "  "})
        self.assertEqual(caught.exception.code, 400)


if __name__ == "__main__":
    unittest.main()
