package dev.gemmaedge.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Test

class StopTokenFilterTest {
    @Suppress("UNCHECKED_CAST")
    @Test
    fun sharedVectors() {
        val data = Vectors.load("stop_tokens.json")
        val stops = data["stops"] as List<String>
        val cases = data["cases"] as List<Map<String, Any?>>
        check(cases.size >= 5)
        for (case in cases) {
            val reply = ReplyAssembler(stops)
            for (chunk in case["chunks"] as List<String>) reply.onChunk(chunk)
            reply.onDone()
            assertEquals(case["name"] as String, case["expected_text"], reply.visible)
            assertEquals(case["name"] as String, case["expected_stopped"], reply.finished)
        }
    }

    @Test
    fun nothingIsShownAfterTheStop() {
        val f = StopTokenFilter()
        assertEquals("ok", f.feed("ok<eos>"))
        assertTrue(f.stopped)
        assertEquals("", f.feed("more"))
        assertEquals("", f.finish())
    }

    @Test
    fun partialStopIsHeldBackThenReleased() {
        val f = StopTokenFilter()
        assertEquals("a ", f.feed("a <end_of"))
        assertEquals("<end_of tale", f.feed(" tale"))
        assertFalse(f.stopped)
    }
}
