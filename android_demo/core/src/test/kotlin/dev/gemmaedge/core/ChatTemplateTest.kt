package dev.gemmaedge.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertThrows
import org.junit.Test

class ChatTemplateTest {
    @Suppress("UNCHECKED_CAST")
    @Test
    fun sharedVectors() {
        val cases = Vectors.load("chat_template.json")["cases"] as List<Map<String, Any?>>
        check(cases.size >= 5)
        for (case in cases) {
            val messages = (case["messages"] as List<Map<String, String>>).map { Message(it["role"]!!, it["content"]!!) }
            val add = case["add_generation_prompt"] as Boolean? ?: true
            assertEquals(case["name"] as String, case["expected"], ChatTemplate.format(messages, addGenerationPrompt = add))
        }
    }

    @Test
    fun unknownRoleIsRefused() {
        assertThrows(IllegalArgumentException::class.java) { ChatTemplate.format(listOf(Message("tool", "x"))) }
    }

    @Test
    fun appPromptHasNoBosBecauseTheEngineAddsIt() {
        val info = PackageInfo("litertlm", "int8", null, "gemma3_text", "it", "model.litertlm", 2, emptyMap(), emptyMap())
        assertEquals("<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n", Settings().promptFor(info, "Hi"))
        assertEquals("Hi", Settings().promptFor(info.copy(variant = "pt"), "Hi"))
    }
}
