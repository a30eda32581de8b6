package dev.gemmaedge.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertThrows
import org.junit.Assert.assertTrue
import org.junit.Test

class SettingsTest {
    @Test
    fun invalidSettingsAreRefused() {
        assertThrows(IllegalArgumentException::class.java) { Settings(maxNewTokens = 0) }
        assertThrows(IllegalArgumentException::class.java) { Settings(topK = 0) }
        assertThrows(IllegalArgumentException::class.java) { Settings(temperature = -1.0) }
        assertThrows(IllegalArgumentException::class.java) { Settings(topP = 1.5) }
    }

    @Test
    fun greedySettingsMapToTopKOne() {
        assertEquals(SamplerPlan(topK = 1, topP = 1.0, temperature = 0.0, seed = 0), Settings().sampler())
        // temperature 0 is greedy whatever top-k says
        assertEquals(1, Settings(topK = 40, temperature = 0.0).sampler().topK)
    }

    @Test
    fun samplingSettingsReachTheSamplerUnchanged() {
        val s = Settings(topK = 40, topP = 0.95, temperature = 0.8, seed = 7, maxNewTokens = 128)
        assertEquals(SamplerPlan(topK = 40, topP = 0.95, temperature = 0.8, seed = 7), s.sampler())
        assertEquals(128, s.maxOutputTokens)
    }

    @Test
    fun everySamplerPlanSatisfiesSamplerConfigRules() {
        // LiteRT-LM's SamplerConfig init: topK > 0, 0 <= topP <= 1, temperature >= 0
        for (s in listOf(Settings(), Settings(topK = 3, temperature = 1.5), Settings(topP = 0.0, temperature = 0.1))) {
            val p = s.sampler()
            assertTrue(p.topK > 0 && p.topP in 0.0..1.0 && p.temperature >= 0.0)
        }
    }

    @Test
    fun settingsFromTheTextFields() {
        val s = Settings.parse(BackendChoice.GPU, " 64 ", "40", "0.7")
        assertEquals(Settings(backend = BackendChoice.GPU, maxNewTokens = 64, topK = 40, temperature = 0.7), s)
        val bad = assertThrows(IllegalArgumentException::class.java) { Settings.parse(BackendChoice.CPU, "lots", "1", "0") }
        assertTrue(bad.message!!.contains("max new tokens"))
        assertThrows(IllegalArgumentException::class.java) { Settings.parse(BackendChoice.CPU, "64", "1", "warm") }
        assertThrows(IllegalArgumentException::class.java) { Settings.parse(BackendChoice.CPU, "0", "1", "0") }
    }

    @Test
    fun engineFailuresBecomeOneLineMessages() {
        assertTrue(EngineFailure.explain("Model file not found: /data/x").contains("push the whole package"))
        assertTrue(EngineFailure.explain("INTERNAL: RESOURCE_EXHAUSTED: Failed to allocate 512MB").contains("not enough memory"))
        assertTrue(EngineFailure.explain("Can not find OpenCL library on this device", BackendChoice.GPU).contains("pick CPU"))
        assertTrue(EngineFailure.explain("Failed to create model assets: bad header").contains("not a valid .litertlm"))
        assertEquals("the engine failed: boom", EngineFailure.explain("boom"))
        assertEquals("the engine failed: no message", EngineFailure.explain(null))
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
