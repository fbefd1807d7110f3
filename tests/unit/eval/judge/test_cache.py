from rt_lightning.eval.judge.cache import JudgeCache, cache_key


def test_cache_survives_a_torn_last_line(tmp_path):
    cache = JudgeCache(tmp_path)
    cache.put("k1", "reply one", "refusal", "m")
    cache.close()
    with open(cache.path, "a", encoding="utf-8") as fh:
        fh.write('{"key": "k2", "reply": "half')
    reopened = JudgeCache(tmp_path)
    assert reopened.get("k1") == "reply one" and reopened.get("k2") is None
    reopened.put("k2", "reply two", "refusal", "m")
    reopened.close()
    assert JudgeCache(tmp_path).get("k2") == "reply two"


def test_cache_key_depends_on_everything_that_shapes_the_reply():
    messages = [{"role": "user", "content": "q"}]
    base = cache_key("refusal", "m", messages, {"temperature": 0.0, "max_tokens": 8})
    assert base == cache_key("refusal", "m", [dict(m) for m in messages], {"max_tokens": 8, "temperature": 0.0})
    assert len({base, cache_key("pairwise", "m", messages, {"temperature": 0.0, "max_tokens": 8}),
                cache_key("refusal", "m2", messages, {"temperature": 0.0, "max_tokens": 8}),
                cache_key("refusal", "m", messages, {"temperature": 0.0, "max_tokens": 9})}) == 4
