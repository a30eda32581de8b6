package dev.gemmaedge.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertThrows
import org.junit.Test

class SettingsTest {
    @Test
    fun invalidSettingsAreRefused() {
        assertThrows(IllegalArgumentException::class.java) { Settings(maxNewTokens = 0) }
        assertThrows(IllegalArgumentException::class.java) { Settings(topK = 0) }
        assertThrows(IllegalArgumentException::class.java) { Settings(temperature = -1.0) }
    }

    @Test
    fun defaultsAreGreedyOnCpu() {
        val s = Settings()
        assertEquals(BackendChoice.CPU, s.backend)
        assertEquals(1, s.topK)
    }

    @Test
    fun jsonReaderHandlesEscapesAndNumbers() {
        @Suppress("UNCHECKED_CAST")
        val v = Json.parse("{\"a\": \"x\\n\\u00e9\", \"b\": [1, 2.5, true, null]}") as Map<String, Any?>
        assertEquals("x\né", v["a"])
        assertEquals(listOf(1L, 2.5, true, null), v["b"])
    }
}
