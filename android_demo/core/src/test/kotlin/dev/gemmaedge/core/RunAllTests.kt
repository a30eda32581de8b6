package dev.gemmaedge.core

import org.junit.runner.JUnitCore
import kotlin.system.exitProcess

/** Runs every test class of the core and prints the line CI reads: "N passed, N failed". */
fun main() {
    val result = JUnitCore.runClasses(
        ChatTemplateTest::class.java, StopTokenFilterTest::class.java,
        ManifestVerifierTest::class.java, SettingsTest::class.java, ReplyTurnTest::class.java,
    )
    for (failure in result.failures) println("FAILED ${failure.testHeader}: ${failure.message}")
    val failed = result.failureCount
    println("${result.runCount - failed} passed, $failed failed")
    exitProcess(if (failed == 0 && result.runCount > 0) 0 else 1)
}
