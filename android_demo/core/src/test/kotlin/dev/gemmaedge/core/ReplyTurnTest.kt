package dev.gemmaedge.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Test

class ReplyTurnTest {
    /** A stream that counts how many chunks were pulled, like a producer the collector stops. */
    private class CountingStream(private val chunks: List<String>) : Iterator<String> {
        var pulled = 0
        override fun hasNext() = pulled < chunks.size
        override fun next() = chunks[pulled++]
    }

    private fun run(chunks: List<String>): Triple<ReplyTurn, String, Int> {
        val turn = ReplyTurn()
        val stream = CountingStream(chunks)
        val shown = StringBuilder()
        turn.consume(stream) { shown.append(it) }
        return Triple(turn, shown.toString(), stream.pulled)
    }

    @Test
    fun theStreamEndsAtTheChunkWithTheStopMarker() {
        val (turn, shown, pulled) = run(listOf("Paris", " is the capital.", "<end_of_turn>", "ignored", "more"))
        assertEquals("Paris is the capital.", shown)
        assertEquals(3, pulled) // no chunk after the marker is read
        assertEquals(ReplyTurn.End.STOP_MARKER, turn.end)
        assertTrue(turn.engineMayStillRun) // the app calls cancelProcess()
    }

    @Test
    fun textBeforeTheMarkerInTheSameChunkIsShown() {
        val (turn, shown, pulled) = run(listOf("Hi", " there<eos>junk", "x"))
        assertEquals("Hi there", shown)
        assertEquals(2, pulled)
        assertEquals(ReplyTurn.End.STOP_MARKER, turn.end)
    }

    @Test
    fun aMarkerSplitAcrossChunksEndsTheStreamAtItsLastPiece() {
        val (turn, shown, pulled) = run(listOf("Paris.<end_", "of_", "turn>more", "never read"))
        assertEquals("Paris.", shown)
        assertEquals(3, pulled)
        assertEquals(ReplyTurn.End.STOP_MARKER, turn.end)
    }

    @Test
    fun theChunkAfterTheMarkerIsNotSkippedButNeverRead() {
        // The old app did `return@collect` after the marker: that skipped one chunk and went on.
        val turn = ReplyTurn()
        assertEquals(ReplyTurn.Step("ok", true), turn.onChunk("ok<end_of_turn>"))
        assertEquals(ReplyTurn.Step("", true), turn.onChunk("next"))
        assertEquals("", turn.onStreamEnd())
        assertEquals("ok", turn.visible)
        assertEquals(ReplyTurn.End.STOP_MARKER, turn.end)
    }

    @Test
    fun engineDoneFlushesAHeldBackPartialMarker() {
        val (turn, shown, pulled) = run(listOf("a <end_of"))
        assertEquals("a <end_of", shown)
        assertEquals(1, pulled)
        assertEquals(ReplyTurn.End.ENGINE_DONE, turn.end)
        assertFalse(turn.engineMayStillRun) // nothing to cancel
    }

    @Test
    fun cancellingBeforeTheEndAsksTheEngineToStop() {
        val turn = ReplyTurn()
        turn.onChunk("Once upon")
        turn.onCancelled()
        assertEquals(ReplyTurn.End.CANCELLED, turn.end)
        assertTrue(turn.engineMayStillRun)
        assertEquals(ReplyTurn.Step("", true), turn.onChunk(" a time")) // late chunks are dropped
        assertEquals("", turn.onStreamEnd())
        assertEquals("Once upon", turn.visible)
    }

    @Test
    fun cancelAfterTheEndChangesNothing() {
        val done = ReplyTurn()
        done.onChunk("x")
        done.onStreamEnd()
        done.onCancelled()
        assertEquals(ReplyTurn.End.ENGINE_DONE, done.end)
        assertFalse(done.engineMayStillRun)

        val stopped = ReplyTurn()
        stopped.onChunk("x<eos>")
        stopped.onCancelled()
        assertEquals(ReplyTurn.End.STOP_MARKER, stopped.end)
        assertTrue(stopped.engineMayStillRun)
    }

    @Test
    fun anEngineErrorNeedsNoCancel() {
        val turn = ReplyTurn()
        turn.onChunk("x")
        turn.onFailed()
        assertEquals(ReplyTurn.End.FAILED, turn.end)
        assertFalse(turn.engineMayStillRun)
    }

    @Test
    fun leavingTheStreamWithoutAnEndCancels() {
        // e.g. the UI's collector threw: end is still null, the decode may be running
        val turn = ReplyTurn()
        turn.onChunk("x")
        assertTrue(turn.engineMayStillRun)
    }

    @Suppress("UNCHECKED_CAST")
    @Test
    fun sharedStopVectorsThroughTheTurn() {
        val data = Vectors.load("stop_tokens.json")
        for (case in data["cases"] as List<Map<String, Any?>>) {
            val turn = ReplyTurn(data["stops"] as List<String>)
            val shown = StringBuilder()
            turn.consume((case["chunks"] as List<String>).iterator()) { shown.append(it) }
            assertEquals(case["name"] as String, case["expected_text"], shown.toString())
            assertEquals(case["name"] as String, case["expected_stopped"], turn.end == ReplyTurn.End.STOP_MARKER)
        }
    }

    @Test
    fun closeOnceRunsItsActionOnce() {
        var runs = 0
        val closer = CloseOnce { runs++ }
        assertTrue(closer.closeNow())
        assertFalse(closer.closeNow())
        closer.close()
        assertEquals(1, runs)
        assertTrue(closer.closed)
    }

    @Test
    fun closeOnceFromManyThreadsStillOnce() {
        var runs = 0
        val closer = CloseOnce { synchronized(this) { runs++ } }
        val threads = List(8) { Thread { closer.close() } }
        threads.forEach { it.start() }
        threads.forEach { it.join() }
        assertEquals(1, runs)
    }
}
